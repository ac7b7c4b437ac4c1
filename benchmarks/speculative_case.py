"""Case study: when does speculative decoding pay for itself in tokens per dollar?

Llama-3.1-8B bf16 on one H100 (chunked prefill, 256 sequences, 8192-token budget), an EAGLE head
proposing k = 4 tokens (``simulator.engine.speculative``), against the same deployment without
it. Grid: Poisson load 2..64 requests/s (lognormal prompts 512, outputs 256, 1,500 requests)
x the per-token acceptance rate 0.3 / 0.5 / 0.7 / 0.9 (1.3 / 1.9 / 2.8 / 4.1 tokens per step).
Per cell: TPOT, TTFT, output tokens per second and per dollar, and whether the SLO (p90 TTFT
<= 1 s, p90 TPOT <= 25 ms) holds. While the GPU keeps up, the arrivals set the tokens per
dollar whatever the engine does, so the figure that decides is the tokens per dollar at the
highest load that still meets the SLO (the load one GPU can be sold at).

    python benchmarks/speculative_case.py [--requests N] [--png benchmarks/results/speculative_case.png]

Prints one row per cell, one per configuration, the conclusions, then a JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from case_common import run  # noqa: E402

RATES = (2, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 64)
ACCEPTANCE = (0.3, 0.5, 0.7, 0.9)
K = 4
TTFT_SLO_S = 1.0
TPOT_SLO_S = 0.025


def scenario(n: int, rate: float, acceptance: float | None) -> dict:
    dep = {"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM", "dtype": "bf16",
           "scheduler": {"policy": "chunked", "max_batch_size": 256, "max_tokens_per_step": 8192,
                         "chunk_size": 8192}}
    if acceptance is not None:
        dep["speculative"] = {"method": "eagle", "num_speculative_tokens": K, "acceptance": acceptance}
    return {"name": f"spec-{rate}-{acceptance}", "seed": 0, "deployments": [dep],
            "workload": {"arrival": "poisson", "rate_rps": rate, "num_requests": n,
                         "prompt_tokens": {"dist": "lognormal", "mean": 512, "std": 256, "max": 8000},
                         "output_tokens": {"dist": "lognormal", "mean": 256, "std": 128, "max": 2000}}}


def figures(res) -> dict:
    s = res.summary
    spec = next(iter(s.get("speculative", {}).values()), {})
    return {"tpot_ms": s["tpot_s"]["mean"] * 1e3, "tpot_p90_ms": s["tpot_s"]["p90"] * 1e3,
            "ttft_p90_s": s["ttft_s"]["p90"], "tok_s": s["output_tokens_per_s"],
            "tok_per_usd": s["output_tokens_per_dollar"],
            "slo_met": bool(s["ttft_s"]["p90"] <= TTFT_SLO_S and s["tpot_s"]["p90"] <= TPOT_SLO_S),
            "tokens_per_step": spec.get("tokens_per_sequence_step", 1.0)}


def capacity(rows: list[dict], acc) -> dict | None:
    """The highest-load cell of one configuration that meets the SLO (None if none does)."""
    ok = [r for r in rows if r["acceptance"] == acc and r["slo_met"]]
    return max(ok, key=lambda r: r["rate"]) if ok else None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    names, values = [], []
    for acc in (None, *ACCEPTANCE):
        rs = [r for r in rows if r["acceptance"] == acc]
        label = "no speculation" if acc is None else f"EAGLE k={K}, acceptance {acc}"
        style = dict(color="black", lw=2) if acc is None else {}
        a.plot([r["rate"] for r in rs], [r["tpot_p90_ms"] for r in rs], marker="o", ms=3, label=label, **style)
        cap = capacity(rows, acc)
        names.append("none" if acc is None else f"{acc}")
        values.append(cap["tok_per_usd"] / 1e6 if cap else 0.0)
    a.axhline(TPOT_SLO_S * 1e3, color="grey", ls=":", lw=1)
    a.set(xlabel="load (requests/s)", ylabel="p90 TPOT (ms)", yscale="log", title="p90 TPOT by load")
    a.legend(fontsize=8)
    bars = b.bar(names, values, color=["black"] + ["C0", "C1", "C2", "C3"][:len(ACCEPTANCE)])
    for bar, acc in zip(bars, (None, *ACCEPTANCE)):
        cap = capacity(rows, acc)
        b.annotate(f"{cap['rate']} req/s" if cap else "none", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                   ha="center", va="bottom", fontsize=8)
    b.set(xlabel="acceptance rate per proposed token", ylabel="million output tokens per $",
          title=f"tokens per $ at the highest load meeting the SLO\n(p90 TTFT <= {TTFT_SLO_S:g} s, "
                f"p90 TPOT <= {TPOT_SLO_S * 1e3:g} ms)")
    fig.suptitle("Llama-3.1-8B on one H100: when speculative decoding pays")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--png", default=str(REPO / "benchmarks" / "results" / "speculative_case.png"))
    a = ap.parse_args()
    rows = []
    for rate in RATES:
        base = figures(run(scenario(a.requests, rate, None), f"rate {rate} no speculation"))
        rows.append({"rate": rate, "acceptance": None, **base, "tok_s_ratio": 1.0})
        for acc in ACCEPTANCE:
            f = figures(run(scenario(a.requests, rate, acc), f"rate {rate} acceptance {acc}"))
            rows.append({"rate": rate, "acceptance": acc, **f, "tok_s_ratio": f["tok_s"] / base["tok_s"]})
    print(f"{'rate':>5} {'accept':>7} {'tok/step':>8} {'TPOT ms':>8} {'p90':>7} {'TTFT p90':>8} "
          f"{'tok/s':>8} {'x plain':>7} {'tok/$':>9} {'SLO':>4}")
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{r['acceptance']:.1f}"
        print(f"{r['rate']:>5} {acc:>7} {r['tokens_per_step']:>8.2f} {r['tpot_ms']:>8.1f} {r['tpot_p90_ms']:>7.1f} "
              f"{r['ttft_p90_s']:>8.2f} {r['tok_s']:>8.0f} {r['tok_s_ratio']:>7.2f} {r['tok_per_usd']:>9.0f} "
              f"{'yes' if r['slo_met'] else 'no':>4}")
    plot(rows, Path(a.png))
    plain = capacity(rows, None)
    lo, top = RATES[0], max(RATES)
    cell = {(r["rate"], r["acceptance"]): r for r in rows}
    print(f"\nplot: {a.png}")
    print(f"{'accept':>7} {'SLO load':>9} {'tok/$ there':>12} {'x plain':>7} {'TPOT @' + str(lo):>9} "
          f"{'tok/s @' + str(top):>10}")
    summary = {}
    for acc in (None, *ACCEPTANCE):
        cap = capacity(rows, acc)
        per_usd = cap["tok_per_usd"] if cap else 0.0
        ratio = per_usd / plain["tok_per_usd"] if plain and cap else float("nan")
        low, high = cell[(lo, acc)], cell[(top, acc)]
        summary["none" if acc is None else str(acc)] = {
            "slo_load_rps": cap["rate"] if cap else 0, "tok_per_usd_at_slo_load": round(per_usd),
            "x_plain": round(ratio, 3), "tpot_low_load_ms": round(low["tpot_ms"], 2),
            "tok_s_saturated": round(high["tok_s"])}
        print(f"{'-' if acc is None else acc:>7} {cap['rate'] if cap else 0:>9} {per_usd:>12.0f} {ratio:>7.2f} "
              f"{low['tpot_ms']:>9.1f} {high['tok_s']:>10.0f}")
    # conclusions, from the figures above
    none = summary["none"]
    lows = [cell[(lo, acc)]["tok_per_usd"] / cell[(lo, None)]["tok_per_usd"] for acc in ACCEPTANCE]
    print(f"\nAt {lo} req/s speculation only cuts latency: mean TPOT {none['tpot_low_load_ms']:.1f} ms -> "
          + ", ".join(f"{summary[str(x)]['tpot_low_load_ms']:.1f}" for x in ACCEPTANCE)
          + f" ms (acceptance {', '.join(map(str, ACCEPTANCE))}), tokens per $ within "
          f"{(min(lows) - 1) * 100:+.1f}..{(max(lows) - 1) * 100:+.1f}% (the arrivals set them).")
    print(f"At the SLO: one GPU carries {none['slo_load_rps']} req/s without speculation; with it "
          + ", ".join(f"{summary[str(x)]['slo_load_rps']} req/s at {x} ({summary[str(x)]['x_plain']:.2f}x tokens per $)"
                      for x in ACCEPTANCE) + ".")
    pays = [x for x in ACCEPTANCE if summary[str(x)]["x_plain"] > 1.05]
    below = max([x for x in ACCEPTANCE if x not in pays], default="-")
    print(f"Speculation pays in tokens per $ from acceptance {min(pays) if pays else 'none'} up "
          f"(break-even near {below}..{min(pays) if pays else '-'}); "
          f"saturated at {top} req/s its throughput is "
          + ", ".join(f"{summary[str(x)]['tok_s_saturated'] / none['tok_s_saturated']:.2f}x" for x in ACCEPTANCE)
          + " of no speculation: below break-even the wider verification steps cost more than the accepted "
          "tokens save once the batch is large.")
    out = {"model": "Llama-3.1-8B", "hardware": "H100-SXM", "method": "eagle", "k": K, "requests": a.requests,
           "slo": {"ttft_p90_s": TTFT_SLO_S, "tpot_p90_s": TPOT_SLO_S}, "by_acceptance": summary}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
