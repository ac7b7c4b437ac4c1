"""What a finished study shows: best trial, Pareto front, trials table, plots, best scenario.

Plots are plain matplotlib PNGs (Agg backend) so they render in the MLflow UI and in CI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from profiling.atomicfile import savefig_atomic, write_text_atomic


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None]


def feasible(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("feasible")]


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The feasible trial with the most tokens per dollar (lowest number breaks ties)."""
    ok = feasible(trials)
    return max(ok, key=lambda t: (t.values[0], -t.number)) if ok else None


def pareto_front(trials: list[FrozenTrial], latency_key: str = "ttft_p90_s") -> list[FrozenTrial]:
    """Feasible trials not dominated in (more tokens/$, lower latency)."""
    pts = [(t, t.values[0], _lat(t, latency_key)) for t in feasible(trials)]
    front = [t for t, v, l in pts
             if not any((v2 >= v and l2 <= l) and (v2 > v or l2 < l) for _, v2, l2 in pts)]
    return sorted(front, key=lambda t: _lat(t, latency_key))


def _lat(t: FrozenTrial, key: str) -> float:
    if len(t.values) > 1:
        return t.values[1]
    return float((t.user_attrs.get("metrics") or {}).get(key, float("inf")))


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, params, objective(s), feasibility, reason, metrics."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        row.update({f"param:{k}": v for k, v in t.params.items()})
        for i, v in enumerate(t.values or []):
            row[f"objective_{i}"] = v
        for k in ("feasible", "reason", "params_hash", "duplicate_of", "bounded", "upper_bound",
                  "guided", "worker_pid", "surplus"):
            if k in t.user_attrs:
                row[k] = t.user_attrs[k]
        row.update({f"metric:{k}": v for k, v in (t.user_attrs.get("metrics") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def best_scenario_yaml(scenario: dict, path: Path, header: str) -> Path:
    """Write the best configuration as a scenario file ``hermes-sim simulate`` runs as is."""
    text = yaml.safe_dump(scenario, sort_keys=False)
    write_text_atomic(path, "".join(f"# {line}\n" for line in header.splitlines()) + text)
    return path


def plot_history(trials: list[FrozenTrial], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = feasible(trials)
    bad = [t for t in trials if not t.user_attrs.get("feasible")]
    ax.scatter([t.number for t in bad], [t.values[0] for t in bad], c="0.7", s=14,
               label="infeasible")
    ax.scatter([t.number for t in ok], [t.values[0] for t in ok], c="tab:blue", s=18,
               label="meets SLOs")
    best, xs, ys = 0.0, [], []
    for t in sorted(trials, key=lambda t: t.number):
        if t.user_attrs.get("feasible"):
            best = max(best, t.values[0])
        xs.append(t.number)
        ys.append(best)
    ax.step(xs, ys, where="post", c="tab:red", label="best so far")
    ax.set(xlabel="trial", ylabel="output tokens per dollar", title="Optimization history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_pareto(trials: list[FrozenTrial], path: Path, latency_key: str = "ttft_p90_s") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    ok = feasible(trials)
    front = pareto_front(trials, latency_key)
    ax.scatter([_lat(t, latency_key) for t in ok], [t.values[0] for t in ok], c="0.6", s=16,
               label="feasible trials")
    ax.plot([_lat(t, latency_key) for t in front], [t.values[0] for t in front], "o-",
            c="tab:red", label="Pareto front")
    ax.set(xlabel=latency_key.replace("_", " "), ylabel="output tokens per dollar",
           title="Tokens per dollar vs tail latency")
    ax.legend(loc="best")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path
