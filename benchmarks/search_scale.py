"""Search at scale: fraction of the best known tokens/$ reached on a space too big to simulate.

The space is ``search/spaces/big_pipeline.yaml`` (614,400 configurations: a RAG pipeline
feeding two LLMs on five GPU types, TP/PP, replicas, batching, disaggregated pools, KV
tier, service placement). No exhaustive optimum exists, so:

1. **Best known value**: the best feasible tokens/$ of every configuration this benchmark
   ever evaluated (the ``--cache`` file keeps them across runs), including a long run of
   the project's search (``--long`` trials for each of ``--long-seeds`` seeds, seeds 100+).
2. **Methods**, each for seeds 0..N-1 and up to 200 distinct configurations: the project's
   search (``run_worker``: the code path of ``hermes-sim search``, SQLite storage, local
   moves, branch and bound), random search (Optuna ``RandomSampler``), plain TPE
   (``TPESampler(seed=...)``, Optuna's defaults), and a grid at the same budget: a
   balanced random design over the choices (Latin-hypercube-like: each parameter's column
   is a concatenation of random permutations of its values, so every prefix of the design
   uses every value about equally often). Random, TPE and the grid see tokens/$ for a
   feasible configuration and 0 for an infeasible one (no constraint model).
   A re-proposed configuration is answered from its first evaluation and does not count:
   "after 40 trials" means 40 distinct configurations, for every method.
3. **Cache**: a configuration is simulated once per run (and once ever with ``--cache``),
   keyed by its params hash, whichever method or seed asks first. Wall time per trial is
   reported with the cache (the method's own overhead: sampler, storage, lookups) and
   without it (that overhead plus the measured first evaluation of each configuration it
   tried, compile time of new step tables included).

Last line: one JSON object with the median and worst fractions per method and budget.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import optuna

from search.objective import Outcome, evaluate, params_hash
from search.space import SearchSpace, load_space
from search.storage import counts, make_storage, quiet_optuna
from search.study import open_study, run_worker, suggest

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search" / "spaces" / "big_pipeline.yaml"
BUDGETS = (20, 40, 100, 200)
METHODS = ("hermes", "random", "tpe", "grid")
MAX_ASKS = 20  # per distinct trial: a sampler that only re-proposes is stopped


class Table:
    """Evaluated configurations by params hash, with the wall time of their first evaluation."""

    def __init__(self, space: SearchSpace, path: Path | None) -> None:
        self.space, self.path = space, path
        self.outcomes: dict[str, Outcome] = {}
        self.eval_s: dict[str, float] = {}
        self.new = 0
        if path is not None and path.is_file():
            doc = json.loads(path.read_text())
            for h, o in doc["table"].items():
                self.outcomes[h] = Outcome(tuple(o["values"]), tuple(o["constraints"]), o["feasible"],
                                           o["reason"], o["metrics"], o["simulated"])
                self.eval_s[h] = o["eval_s"]

    def __call__(self, _space: SearchSpace, values: dict[str, Any]) -> Outcome:
        h = params_hash(values)
        if h not in self.outcomes:
            t0 = time.perf_counter()
            self.outcomes[h] = evaluate(self.space, values)
            self.eval_s[h] = time.perf_counter() - t0
            self.new += 1
            if self.new % 100 == 0:
                print(f"  {self.new} new configurations evaluated", file=sys.stderr)
                self.save()
        return self.outcomes[h]

    def best(self) -> float:
        return max((o.values[0] for o in self.outcomes.values() if o.feasible), default=0.0)

    def save(self) -> None:
        if self.path is None:
            return
        doc = {"table": {h: {"values": o.values, "constraints": o.constraints, "feasible": o.feasible,
                             "reason": o.reason, "metrics": o.metrics, "simulated": o.simulated,
                             "eval_s": self.eval_s[h]} for h, o in self.outcomes.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.path)


class Run:
    """One method on one seed: distinct configurations in order and the method's own time."""

    def __init__(self) -> None:
        self.hashes: list[str] = []
        self.overhead_s = 0.0

    def curve(self, table: Table, n: int) -> list[float]:
        best, out = 0.0, []
        for h in self.hashes[:n]:
            o = table.outcomes[h]
            best = max(best, o.values[0]) if o.feasible else best
            out.append(best)
        return out + [best] * (n - len(out))

    def eval_s(self, table: Table) -> float:
        return sum(table.eval_s[h] for h in self.hashes)


def timed(table: Table, run: Run, body: Callable[[], None]) -> None:
    """Run ``body`` and charge its wall time minus first evaluations to the method."""
    before = dict(table.eval_s)
    t0 = time.perf_counter()
    body()
    fresh = sum(v for h, v in table.eval_s.items() if h not in before)
    run.overhead_s = time.perf_counter() - t0 - fresh


def run_hermes(space: SearchSpace, table: Table, seed: int, n: int) -> Run:
    """The project's search through ``run_worker`` with the table as its evaluator."""
    run = Run()

    def body() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/scale.db"
            study = open_study(space, make_storage(url), "scale", seed)
            run_worker(url, "scale", n_trials=n, seed=seed, evaluator=table)
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
                if counts(t):
                    run.hashes.append(t.user_attrs["params_hash"])
    timed(table, run, body)
    return run


def run_optuna(space: SearchSpace, table: Table, sampler: optuna.samplers.BaseSampler, n: int) -> Run:
    """Ask/tell with a plain sampler (in-memory storage); infeasible scores 0."""
    run = Run()

    def body() -> None:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        seen: set[str] = set()
        for _ in range(MAX_ASKS * n):
            trial = study.ask()
            values = suggest(space, trial)
            o = table(space, values)
            h = params_hash(values)
            if h not in seen:
                seen.add(h)
                run.hashes.append(h)
            study.tell(trial, o.values[0] if o.feasible else 0.0)
            if len(run.hashes) >= n:
                break
    timed(table, run, body)
    return run


def grid_design(space: SearchSpace, seed: int, n: int) -> list[dict[str, Any]]:
    """A balanced random design: each parameter cycles through random permutations of its
    values, so any prefix uses each value about equally often; conditions drop inactive ones."""
    rng = random.Random(seed)
    cols: dict[str, list[Any]] = {}
    for path, p in space.params.items():
        col: list[Any] = []
        while len(col) < MAX_ASKS * n:
            block = p.grid()
            rng.shuffle(block)
            col.extend(block)
        cols[path] = col
    rows = []
    for i in range(MAX_ASKS * n):
        values: dict[str, Any] = {}
        for path, p in space.params.items():
            if p.active(values, space.base):
                values[path] = cols[path][i]
        rows.append(values)
    return rows


def run_grid(space: SearchSpace, table: Table, seed: int, n: int) -> Run:
    run = Run()

    def body() -> None:
        seen: set[str] = set()
        for values in grid_design(space, seed, n):
            h = params_hash(values)
            if h in seen:
                continue
            seen.add(h)
            table(space, values)
            run.hashes.append(h)
            if len(run.hashes) >= n:
                break
    timed(table, run, body)
    return run


def run_method(method: str, space: SearchSpace, table: Table, seed: int, n: int) -> Run:
    if method == "hermes":
        return run_hermes(space, table, seed, n)
    if method == "random":
        return run_optuna(space, table, optuna.samplers.RandomSampler(seed=seed), n)
    if method == "tpe":
        return run_optuna(space, table, optuna.samplers.TPESampler(seed=seed), n)
    return run_grid(space, table, seed, n)


def plot(fractions: dict[str, dict[int, list[float]]], budgets: tuple[int, ...], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.plots import save_png
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, by_n in fractions.items():
        med = [statistics.median(by_n[k]) for k in budgets]
        worst = [min(by_n[k]) for k in budgets]
        line, = ax.plot(budgets, med, marker="o", label=f"{method} (median)")
        ax.plot(budgets, worst, ls=":", color=line.get_color(), label=f"{method} (worst)")
    ax.axhline(0.98, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("distinct configurations evaluated")
    ax.set_ylabel("fraction of best known tokens/$")
    ax.set_title("big_pipeline.yaml: 614,400 configurations")
    ax.legend(fontsize=7, ncol=2)
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--long", type=int, default=600, help="trials of each long run of the project's search")
    ap.add_argument("--long-seeds", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cache", type=Path, default=None,
                    help="JSON file keeping every evaluated configuration (reused and extended)")
    ap.add_argument("--png", type=Path, default=REPO / "benchmarks" / "results" / "search_scale.png")
    ap.add_argument("--quick", action="store_true", help="2 seeds, budgets up to 40, a 100-trial long run")
    ap.add_argument("--max-budget", type=int, default=None, help="report budgets up to this many trials only")
    a = ap.parse_args()
    methods = tuple(m for m in a.methods.split(",") if m)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        print(f"search_scale.py: error: --methods: unknown {bad or 'empty'} (known: {', '.join(METHODS)})",
              file=sys.stderr)
        sys.exit(2)
    budgets = (20, 40) if a.quick else BUDGETS
    if a.max_budget is not None:
        budgets = tuple(b for b in budgets if b <= a.max_budget) or (a.max_budget,)
    seeds = 2 if a.quick else a.seeds
    long_n, long_seeds = (100, 1) if a.quick else (a.long, a.long_seeds)
    quiet_optuna()
    space = load_space(SPACE)
    size = len(space.enumerate())
    table = Table(space, a.cache)
    print(f"space: {size:,} configurations; cache holds {len(table.outcomes)}", file=sys.stderr)
    t0 = time.perf_counter()
    for s in range(long_seeds):  # the long run: more budget than any method gets below
        run_hermes(space, table, 100 + s, long_n)
        print(f"  long run seed {100 + s}: {long_n} trials, best so far {table.best():,.0f}", file=sys.stderr)
    long_s = time.perf_counter() - t0
    runs: dict[str, list[Run]] = {m: [] for m in methods}
    for seed in range(seeds):
        for m in methods:
            runs[m].append(run_method(m, space, table, seed, budgets[-1]))
            print(f"  seed {seed} {m}: done", file=sys.stderr)
    table.save()
    best = table.best()
    n_ok = sum(o.feasible for o in table.outcomes.values())
    n_sim = sum(o.simulated for o in table.outcomes.values())
    print(f"best known {best:,.0f} tokens/$: best of {len(table.outcomes):,} distinct configurations "
          f"evaluated ({n_sim:,} simulated, {n_ok:,} feasible), long run {long_seeds} x {long_n} trials "
          f"of the project's search ({long_s:.0f} s); {table.new:,} evaluated in this run")
    fractions = {m: {k: [r.curve(table, k)[-1] / best for r in rs] for k in budgets} for m, rs in runs.items()}
    print(f"{'method':8} " + " ".join(f"{'@' + str(k) + ' med':>9} {'worst':>6}" for k in budgets)
          + f" {'s/trial cached':>15} {'uncached':>9}")
    res: dict[str, Any] = {"space_size": size, "best_known": best, "distinct_evaluated": len(table.outcomes),
                           "seeds": seeds}
    for m, rs in runs.items():
        n_tr = sum(len(r.hashes) for r in rs)
        cached = sum(r.overhead_s for r in rs) / n_tr
        uncached = (sum(r.overhead_s for r in rs) + sum(r.eval_s(table) for r in rs)) / n_tr
        cells = " ".join(f"{statistics.median(fractions[m][k]):>9.3f} {min(fractions[m][k]):>6.3f}"
                         for k in budgets)
        print(f"{m:8} {cells} {cached:>15.3f} {uncached:>9.3f}")
        for k in budgets:
            res[f"{m}_median_at_{k}"] = round(statistics.median(fractions[m][k]), 4)
            res[f"{m}_worst_at_{k}"] = round(min(fractions[m][k]), 4)
        res[f"{m}_s_per_trial_cached"] = round(cached, 4)
        res[f"{m}_s_per_trial_uncached"] = round(uncached, 4)
    k = 100 if 100 in budgets else budgets[-1]
    for m in runs:  # per seed, to see which seeds stall
        print(f"{m} per seed @{k}: " + ", ".join(f"{f:.3f}" for f in fractions[m][k]))
    sims = [table.eval_s[h] for h, o in table.outcomes.items() if o.simulated]
    if sims:
        print(f"one simulation: median {statistics.median(sims):.3f} s, max {max(sims):.2f} s "
              f"(first use of a step table compiles it)")
    plot(fractions, budgets, a.png)
    print(f"plot: {a.png}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
