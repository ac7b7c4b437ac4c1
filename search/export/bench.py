"""The benchmark that checks a prediction: the scenario's own request stream as a ``vllm bench
serve`` custom dataset, and the commands that run it and compare the result with the simulation.

The stream is the simulator's (``build_requests`` with the scenario's seed, request classes
and shared prefixes drawn by ``pipelines.build.prepare``). A prompt is random words, one token
each in Llama-3 / Qwen / Mistral BPE tokenizers (each a common word after a space), so its
token count is its word count plus the BOS the server adds. A prompt segment the simulator
shares between requests (a system prompt, a conversation's history) is the same text each
time, so the engine's prefix cache sees the reuse the simulation saw.
"""
from __future__ import annotations

import json
import shlex
import zlib
from dataclasses import dataclass

import numpy as np

from simulator.engine.workload import build_requests
from simulator.pipelines.build import prepare
from simulator.scenario import Scenario

from .engine_cmd import Launch

# Common English words that BPE tokenizers of the Llama-3, Qwen and Mistral families keep whole
# after a space; random picks keep prompts from collapsing into one repeated cached block.
WORDS = ("the of and to in is was for on as with by at from that this be are or an it not which "
         "have one had all were their there been has more when will would who so no if out up time "
         "only some can into other what than then them these its about two first new also after any "
         "over most such where year back work well way even because good each those people very "
         "make through long many before must great same down own old see under last never while "
         "world life day part place small end home made found both high since during city name "
         "water line right three left late hand given few large point house power light music "
         "game book story early young night number open state group order plan side body table").split()


@dataclass(frozen=True)
class Dataset:
    """The requests one LLM deployment receives."""

    deployment: str
    lines: list[str]                    # JSONL lines
    rate_rps: float                     # its share of the scenario's arrival rate


def _text(key: tuple, n: int, seed: int) -> str:
    rng = np.random.default_rng([seed, zlib.crc32(repr(key).encode())])
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


def _llm_of(cls) -> tuple[str | None, int]:
    """(LLM deployment of a request class's first llm stage, tokens added to its prompt before it)."""
    extra = 0
    for s in cls.stages:
        if s.kind in ("llm", "reasoning"):
            return s.deployment, extra
        extra += s.context_tokens
    return None, extra


def datasets(sc: Scenario) -> tuple[list[Dataset], list[str]]:
    """One dataset per LLM deployment that requests reach, and notes on what is left out."""
    plan = prepare(sc, build_requests(sc.workload, sc.seed))
    reqs, notes = plan.requests, []
    n = len(reqs)
    names = [d.name for d in sc.deployments]
    target, extra = [], []
    for cls in plan.classes:
        dep, add = _llm_of(cls)
        if dep is None and cls.stages[0].kind == "llm" and len(names) == 1:
            dep = names[0]              # a plain scenario: every request to its one deployment
        target.append(dep)
        extra.append(add)
    out = []
    for name in names:
        idx = [i for i in range(n) if target[plan.klass[i]] == name]
        if not idx:
            continue
        lines = []
        for i in idx:
            segs = plan.segments[i] if plan.segments is not None else [(("req", i), int(reqs.prompt[i]))]
            parts = [_text(key, tok, sc.seed) for key, tok in segs if tok > 0]
            ctx = extra[plan.klass[i]]
            if ctx:                      # retrieved passages, new for each request
                parts.append(_text(("context", i), ctx, sc.seed))
            p = sum(t for _, t in segs) + ctx
            lines.append(json.dumps({"prompt": " ".join(parts), "output_tokens": int(reqs.output[i]),
                                     "prompt_tokens": p}, separators=(",", ":")))
        out.append(Dataset(name, lines, sc.workload.rate_rps * len(idx) / n))
    unrouted = sum(1 for i in range(n) if target[plan.klass[i]] is None)
    if unrouted:
        notes.append(f"{unrouted} requests reach their LLM through a route stage and are in no dataset")
    return out, notes


def arrival_flags(sc: Scenario, rate: float) -> tuple[list[str], list[str]]:
    """(vllm bench serve flags reproducing the arrivals, notes where they cannot)."""
    w = sc.workload
    if w.arrival == "closed_loop":
        return ["--request-rate", "inf", "--max-concurrency", str(w.concurrency)], (
            [f"think_time_s {w.think_time_s} has no vllm bench serve flag"] if w.think_time_s else [])
    if w.arrival == "gamma":    # vLLM's burstiness is the gamma shape: cv = 1/sqrt(burstiness)
        return ["--request-rate", f"{rate:g}", "--burstiness", f"{1 / w.cv ** 2:g}"], []
    notes = []
    if w.arrival == "bursty":
        notes.append("bursty arrivals have no vllm bench serve flag: Poisson at the same mean rate")
    if w.arrival == "trace":
        notes.append("trace arrivals are replayed as Poisson at the rate given by the workload's rate_rps")
    return ["--request-rate", f"{rate:g}", "--burstiness", "1"], notes


def run_script(sc: Scenario, scenario_path: str, ds: Dataset, ln: Launch, dataset_file: str) -> tuple[str, list[str]]:
    """bench/run.sh lines for one dataset: the benchmark, then validate and calibrate on its result."""
    flags, notes = arrival_flags(sc, ds.rate_rps)
    result_dir = f"bench/results-{ds.deployment}"
    bench = ["vllm", "bench", "serve", "--backend", "openai", "--endpoint", "/v1/completions",
             "--base-url", "${BASE_URL:-http://localhost:8000}", "--model", ln.model, "--tokenizer", ln.model,
             "--dataset-name", "custom", "--dataset-path", dataset_file, "--custom-output-len", "-1",
             "--skip-chat-template", "--ignore-eos", "--num-prompts", str(len(ds.lines)), *flags,
             "--seed", str(sc.seed), "--save-result", "--result-dir", result_dir,
             "--result-filename", "result.json"]
    result = f"{result_dir}/result.json"
    validate = ["hermes-sim", "validate", result, "--engine", ln.engine, "--engine-version", ln.version,
                "--gpu", ln.hardware, "--model", ln.model, "--tp", str(ln.tp), "-o", f"{result_dir}/validate"]
    against = ["hermes-sim", "validate", result, scenario_path, "-o", f"{result_dir}/validate-scenario"]
    calibrate = ["hermes-sim", "calibrate", "--runs", result, "-o", f"{result_dir}/{ln.engine}-profile.json"]

    def sh(words: list[str]) -> str:
        return " ".join(w if w.startswith("${") else shlex.quote(w) for w in words)

    lines = [f"# {ds.deployment}: {len(ds.lines)} requests at {ds.rate_rps:g} req/s against {ln.name}",
             sh(bench), sh(validate), sh(against), sh(calibrate), ""]
    return "\n".join(lines), notes
