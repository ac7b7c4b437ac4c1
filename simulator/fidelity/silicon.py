"""End-to-end measurements as scenarios: ``silicon_sample.csv`` rows (closed loop at fixed
concurrency; read by ``profiling.readers.serving``) and measured per-request tables.

Each silicon row becomes its own closed-loop scenario (model, system, precision, TP/PP,
concurrency = the recorded ``silicon_concurrency``, else ``batch_size``; a Dynamo row's
clients spread over ``concurrency / batch_size`` engines) replaying the row's benchmark
setup (``bench_protocol``): the client (how many prompts per client, how spread the lengths, whether warm-up requests
count) and the engine configuration the harness deployed (TRT-LLM ``max_num_tokens``).
With identical lengths the closed loop runs in waves of prompts that arrive together, so
how many prompts one engine step may take decides TTFT. Disaggregated rows become a
prefill pool and a decode pool (``_scheduler``). Rows the catalog or the replay cannot
serve (unknown model or GPU, attention data parallelism, no recorded concurrency) are
returned with the reason, never dropped. Expert parallelism (``moe_ep_size``) is replayed
as experts sharded over the TP group: under uniform routing each GPU reads the same
expert bytes and does the same FLOPs either way.
"""
from __future__ import annotations

import re
import copy
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from profiling.errors import HermesError
from profiling.hardware import load_catalog
from profiling.models import load_models

from ..scenario import OverheadConfig, Scenario
from ..engine.engines import (BACKEND_FUSIONS, BACKEND_KV_RESERVATION, BACKEND_POLICY, LIMIT_ARGS,
                              engine_defaults, parse_version)
from ..engine.workload import Requests

REQUESTS_PER_CLIENT = 10    # closed-loop requests per concurrent client (num_prompts = 10 x conc)
TOKEN_BUDGET = 8192         # vLLM max_num_batched_tokens / TRT-LLM max_num_tokens defaults
# InferenceMAX rows (the dated DB dump in ``silicon_data_source``) are measured with
# ``benchmark_serving --dataset-name random --random-range-ratio 0.8 --num-prompts 10*CONC
# --max-concurrency CONC --request-rate inf --ignore-eos``: prompt and output lengths are
# uniform in [0.8 L, L], which de-synchronizes the closed loop's waves. The dump's other
# form (``db-dump/<date>; config_id=..; workflow_run_id=..``) is the same campaign: the same
# 1k/8k grid, models and images, measured on the same dates as the dated files.
_INFERENCEMAX = re.compile(r"source_file=\d{4}-\d{2}-\d{2}\.csv|^db-dump/.*workflow_run_id=")


# AIConfigurator's own gap-analysis harness (source paths ``.../aic-auto-gap-analysis/...``):
# fixed lengths, every request counted, engines launched from AIC-generated configs whose
# token budget (``max_num_tokens``, passed to vLLM as ``max_num_batched_tokens``) is a
# multiple of isl (AIC's agg search adds k x isl candidates). k = 4, the same for both
# stacks; evidence, from the measured TTFT at concurrency 8, which grows in proportion to
# isl where a fixed 8192-token budget cannot produce that (figures: benchmarks/README.md).
# Both were chosen on these rows (all of them, calibration and held-out alike); the SGLang
# rows of the harness keep the flat budget, which fits them better.
# 4 x isl is only the uncalibrated default: calibration (``calibrate.fit_engines``) picks k,
# and whether the engine runs one sequence below its clients, per model and TP on its own rows.
# See benchmarks/silicon_fidelity.py.
# InferenceMAX's TensorRT-LLM launch script for Llama-3.1-70B turns on batch waiting for
# isl = osl = 1024 below TP8 only (``batch_wait_timeout_iters: 20``,
# ``batch_wait_max_tokens_ratio: 0.9``): a new prompt joins running decodes only after 20
# steps or once the step would be 90% full. The B200 rows show exactly that: at
# concurrency 4, TTFT 305 / 231 / 179 ms at TP1 / 2 / 4 (fp4) against 67 ms at TP8 and
# 84-90 ms for vLLM on the same GPUs; without the wait they simulated at 101 / 83 / 73 ms.
# The other models' TRT-LLM scripts (gpt-oss, MiniMax) do not set it.
IMAX_TRTLLM_BATCH_WAIT = {"batch_wait_iters": 20, "batch_wait_tokens_ratio": 0.9}
_IMAX_BATCH_WAIT_MODELS = ("Llama-3.1-70B", "Llama-3.3-70B")


def _batch_wait(r, proto: BenchProtocol, model) -> dict:
    if (proto.name == "inferencemax" and r.backend == "trtllm" and model.name in _IMAX_BATCH_WAIT_MODELS
            and int(r.isl) == 1024 and int(r.osl) == 1024 and int(r.tp_size) < 8):
        return IMAX_TRTLLM_BATCH_WAIT
    return {}


_AIC_HARNESS = re.compile(r"aic-auto-gap-analysis")
AIC_PROMPTS_PER_STEP = 4
_AIC_BUDGET_BACKENDS = ("trtllm", "vllm")


@dataclass(frozen=True)
class BenchProtocol:
    """How a row's client drove the server and how its engine was configured."""

    name: str
    range_ratio: float          # lengths uniform in [range_ratio * L, L]; 1.0 = fixed
    requests_per_client: int
    prompts_per_step: int | None = None   # engine token budget = this x isl (None: TOKEN_BUDGET)
    warmup_generations: int = 0           # first C x this many requests are not measured


def bench_protocol(source: object, backend: str | None = None) -> BenchProtocol:
    """The benchmark setup a ``silicon_data_source`` string (and backend) points to."""
    if isinstance(source, str) and _INFERENCEMAX.search(source):
        return BenchProtocol("inferencemax", 0.8, 10)
    if isinstance(source, str) and _AIC_HARNESS.search(source) and backend in _AIC_BUDGET_BACKENDS:
        return BenchProtocol("fixed", 1.0, REQUESTS_PER_CLIENT, AIC_PROMPTS_PER_STEP)
    return BenchProtocol("fixed", 1.0, REQUESTS_PER_CLIENT)


def token_budget(proto: BenchProtocol, isl: int) -> int:
    """Tokens one engine step may take (prefill + decode) under the row's engine config."""
    if proto.prompts_per_step is None:
        return max(TOKEN_BUDGET, int(isl))
    return proto.prompts_per_step * int(isl)


def _stack(r, proto: BenchProtocol) -> str:
    # per framework and benchmark setup (client + front end); per-version groups of a few
    # rows over-fit, so versions of one setup share their parameters. AIConfigurator's
    # harness deploys an engine config it generated for each model and parallelism, and
    # these differ as much as stacks do, so there each (model, TP) is its own setup:
    # - per model: H100 TRT-LLM Llama-3.1-8B's TTFT carries one completion interval of
    #   queueing at every TP, Qwen3-32B's none;
    # - per TP: with one setting per model the held-out TTFT error trends with TP for both
    #   TRT-LLM models (TP8 barely faster than TP4 at isl 1k); see benchmarks/README.md.
    src = getattr(r, "silicon_data_source", None)
    if isinstance(src, str) and _AIC_HARNESS.search(src):
        tp = _num(r, "tp_size" if r.mode != "disagg" else "prefill_tp_size", 1.0)
        return f"{r.backend}-aic:{str(r.model_path).rsplit('/', 1)[-1]}:tp{int(tp)}"
    return f"{r.backend}-{proto.name}"


def _lengths(mean: float, ratio: float) -> dict:
    if ratio >= 1.0:
        return {"dist": "fixed", "mean": float(mean)}
    lo = max(1, int(mean * ratio))
    return {"dist": "uniform", "mean": (lo + mean) / 2, "min": lo, "max": int(mean)}


@dataclass(frozen=True)
class SiliconRow:
    id: str
    backend: str
    scenario: Scenario | None
    ttft_s: float
    tpot_s: float
    unsupported: str | None = None
    system: str = ""
    stack: str = ""             # framework and benchmark setup, e.g. "vllm-inferencemax"
    warmup: int = 0             # leading requests left out of the measured means
    budget_isl: int = 0         # isl when the engine budget is an unknown multiple of it (else 0)
    doc: dict | None = field(default=None, compare=False, repr=False)   # the scenario as written

    @property
    def group(self) -> str:
        """Overhead parameters are calibrated per serving stack (framework, version and its
        front end / client setup) and GPU."""
        return f"{self.stack or self.backend}/{self.system}"


def _dtype(precision, model) -> tuple[str, str | None]:
    """Weights and KV dtype: quantized (fp8/fp4) checkpoints carry FP8 KV scales that
    both stacks use (B200 70B fp8 TP1 at 64 x 9k tokens runs without queueing, which only
    FP8 KV fits); unquantized rows keep KV in bf16, and so do natively expert-quantized
    models (gpt-oss's MXFP4 checkpoint has no KV scales; InferenceMAX serves it with
    ``kv_cache_config.dtype: auto``)."""
    if not isinstance(precision, str) or not precision.strip():
        return "bf16", None
    p = precision.strip().lower()
    w = "fp4" if p in ("fp4", "nvfp4", "mxfp4") else p
    return w, ("fp8" if w in ("fp8", "fp4") and model.quantized_layers == "all" else None)


DISAGG_COLUMNS = ("prefill_num_workers", "prefill_tp_size", "decode_num_workers", "decode_tp_size",
                  "decode_batch_size")
_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")
_DYNAMO = re.compile(r"dynamo_version=")


def _num(r, col: str, default: float = float("nan")) -> float:
    v = getattr(r, col, default)
    return default if v is None or pd.isna(v) else float(v)


def _unsupported(r, models, hw) -> str | None:
    """Why a row cannot be replayed, or None."""
    if r.mode not in ("agg", "disagg"):
        return f"mode '{r.mode}' is neither 'agg' nor 'disagg'"
    if r.model_path not in models:
        return f"model '{r.model_path}' is not in the model catalog"
    if r.system not in hw:
        return f"hardware '{r.system}' is not in the hardware catalog"
    if r.backend not in BACKEND_POLICY:
        return f"backend '{r.backend}' has no batching policy mapping"
    need = ("isl", "osl") + (DISAGG_COLUMNS if r.mode == "disagg" else ("batch_size", "tp_size"))
    missing = [c for c in need if np.isnan(_num(r, c))]
    if missing:
        return f"missing {'/'.join(missing)}"
    dp = max(_num(r, c, 1.0) for c in ("attention_dp_size", "prefill_attention_dp_size",
                                       "decode_attention_dp_size"))
    if dp > 1:  # agg rows fill only attention_dp_size, disagg rows the prefill_/decode_ ones
        return f"attention data parallelism (attention_dp_size={int(dp)}) is not modelled"
    conc = _concurrency(r)
    if conc is None:
        kind = "disaggregated row" if r.mode == "disagg" else "Dynamo deployment (batch_size is the engine's max batch)"
        return f"{kind} without a recorded concurrency (no silicon_concurrency in silicon_data_source)"
    if r.mode != "disagg" and _replicas(r, conc) is None:
        return f"concurrency {conc} is not a whole number of engines of batch_size {int(r.batch_size)}"
    return None


def _concurrency(r) -> int | None:
    """Clients in flight: the harness's recorded ``silicon_concurrency``, else ``batch_size``
    for an aggregated row. Dynamo deployments (``dynamo_version=`` in the source) record
    the engine's max batch in ``batch_size``, not the clients (DeepSeek-R1 c224 with batch
    56, Qwen3-32B-NVFP4 c416 with 13), so without a recorded concurrency they have none:
    the H100 vLLM Qwen3-32B TP2 row (batch 48, isl 4000) measures a 0.18 s TTFT, a lone
    prefill, and 11.6 ms TPOT, where 48 clients would queue seconds of prefills. Neither is
    decode batch x decode workers for disaggregated rows: on the H100 vLLM Qwen3-32B row
    that would put 224 sequences of ~4.5k tokens on each TP4 decode instance, whose FP8 KV
    alone takes 10 ms per step to read, yet the row measures 8.7 ms TPOT."""
    src = str(getattr(r, "silicon_data_source", "") or "")
    m = _CONCURRENCY.search(src)
    if m:
        return int(m.group(1))
    if r.mode == "disagg" or _DYNAMO.search(src):
        return None
    return int(r.batch_size)


def _replicas(r, conc: int) -> int | None:
    """Aggregated engines serving the clients: a Dynamo row records one engine's max batch
    and its clients, so it ran ``conc / batch_size`` engines (every such row divides
    exactly: 224/56, 416/13, 448/56); None when that is not a whole number."""
    batch = int(r.batch_size)
    if conc <= batch:
        return 1
    return conc // batch if conc % batch == 0 else None


def _scheduler(r, proto: BenchProtocol, batch: int, model) -> dict:
    """Aggregated rows: the backend's batching at the harness token budget, ``batch``
    sequences per engine (the clients one engine serves). Disaggregated
    rows: ``prefill_num_workers`` x TP ``prefill_tp_size`` prefill instances taking
    ``prefill_batch_size`` whole prompts a step, ``decode_num_workers`` x TP
    ``decode_tp_size`` decode instances of ``decode_batch_size`` sequences, any prefill
    instance to any decode instance (Dynamo's global KV routing)."""
    common = {"kv_reservation": BACKEND_KV_RESERVATION.get(r.backend, "on_demand")}
    if r.mode != "disagg":
        budget = token_budget(proto, int(r.isl))
        return {"policy": BACKEND_POLICY[r.backend], "max_batch_size": max(batch, 1),
                "max_tokens_per_step": budget, "chunk_size": budget, **_batch_wait(r, proto, model), **common}
    prompts = int(_num(r, "prefill_batch_size", 1.0))
    decode_batch = int(r.decode_batch_size)
    budget = max(prompts * int(r.isl), decode_batch)
    return {"policy": "disaggregated", "max_batch_size": decode_batch, "max_tokens_per_step": budget,
            "chunk_size": budget, "prefill_policy": "continuous", "mode": "global",
            "prefill_replicas": int(r.prefill_num_workers), "decode_replicas": int(r.decode_num_workers),
            "decode_tp": int(r.decode_tp_size), **common}


def engine_version(backend: str, version: object) -> str:
    """The release a row's ``backend_version`` names; a nightly build (no release number, or
    only a build hash: ``nightly-dev-20260216-d3bae71e``) is the newest documented range."""
    v = str(version or "").strip()
    if v and not v.lower().startswith("nightly"):
        try:
            parse_version(v)
            return v
        except ValueError:
            pass
    return max((str(e["since"]) for e in engine_defaults()[backend]), key=parse_version)


def _engine_block(r, proto: BenchProtocol, batch: int) -> dict:
    """The deployment's ``engine:`` block: the row's backend and release with its documented
    defaults, plus the settings the harness ran with (sequences per engine = its clients, the
    token budget of the protocol). SGLang's per-step budget stays its memory tier's default."""
    seqs, tokens = LIMIT_ARGS[r.backend]
    args = {seqs: max(batch, 1)}
    if r.backend != "sglang":
        args[tokens] = token_budget(proto, int(r.isl))
    return {"name": r.backend, "version": engine_version(r.backend, r.backend_version), "args": args}


def silicon_rows(df: pd.DataFrame, overhead: dict[str, OverheadConfig] | None = None,
                 surrogate: str | None = "builtin", requests_per_client: int | None = None,
                 warmup_generations: int | None = None,
                 prompts_per_step: int | None | bool = True, engine: bool = True) -> list[SiliconRow]:
    """One closed-loop scenario per row (or the reason it cannot be simulated).

    ``warmup_generations`` overrides the protocol's (0: every request is measured, as the
    clients of these rows report; n: the first n x concurrency requests are warm-up, the
    steady state AIConfigurator's closed-loop estimator reports). ``prompts_per_step``
    ``True`` keeps the protocol's engine budget, ``None`` forces the flat TOKEN_BUDGET, an
    int forces k x isl. ``engine`` (aggregated rows) runs the row's backend and release
    through its ``engine:`` block (documented defaults, CUDA-graph padding, async
    scheduling, the all-reduce it picks, and its shipped engine profile for any overhead
    ``overhead`` leaves out); ``False`` is the plain deployment of earlier releases."""
    models, hw = load_models(), load_catalog()
    out = []
    for r in df.itertuples(index=False):
        reason = _unsupported(r, models, hw)
        proto = bench_protocol(getattr(r, "silicon_data_source", None), str(r.backend))
        if prompts_per_step is not True:
            proto = replace(proto, prompts_per_step=prompts_per_step)
        if warmup_generations is not None:
            proto = replace(proto, warmup_generations=warmup_generations)
        sc = None
        conc = 0
        stack = _stack(r, proto)
        if reason is None:
            model = models.get(r.model_path)
            dtype, kv = _dtype(r.precision, model)
            conc = _concurrency(r)
            engines = 1 if r.mode == "disagg" else _replicas(r, conc)
            k = requests_per_client or proto.requests_per_client
            oh = (overhead or {}).get(f"{stack}/{r.system}")
            tp = r.prefill_tp_size if r.mode == "disagg" else r.tp_size
            pp = _num(r, "prefill_pp_size" if r.mode == "disagg" else "pp_size", 1.0)
            dep = {"name": "llm", "model": r.model_path, "hardware": r.system, "tp": int(tp), "pp": int(pp),
                   "replicas": engines, "dtype": dtype, "kv_dtype": kv, "max_model_len": int(r.isl + r.osl) + 16}
            if engine and r.mode != "disagg":
                dep["engine"] = _engine_block(r, proto, conc // engines)
                dep["scheduler"] = _batch_wait(r, proto, model)
                if oh is not None:
                    dep["overhead"] = oh.model_dump()
            else:
                dep.update({"fusions": BACKEND_FUSIONS.get(r.backend, []),
                            "scheduler": _scheduler(r, proto, conc // engines, model),
                            "overhead": (oh or OverheadConfig()).model_dump()})
            doc = {"name": str(r.id), "surrogate": surrogate, "deployments": [dep],
                   "workload": {"arrival": "closed_loop", "concurrency": conc, "num_requests": conc * k,
                                "prompt_tokens": _lengths(r.isl, proto.range_ratio),
                                "output_tokens": _lengths(r.osl, proto.range_ratio)}}
            try:
                sc = Scenario.model_validate(copy.deepcopy(doc))
            except Exception as e:  # a row the scenario schema rejects
                reason = f"invalid row ({str(e).splitlines()[0]})"
        out.append(SiliconRow(str(r.id), str(r.backend), sc, float(r.silicon_ttft_ms) / 1e3,
                              float(r.silicon_tpot_ms) / 1e3, reason, str(r.system),
                              stack, proto.warmup_generations * conc,
                              int(r.isl) if sc is not None and r.mode != "disagg" and proto.prompts_per_step else 0,
                              doc if sc is not None else None))
    return out


def with_engine(row: SiliconRow, prompts_per_step: int, held_slots: int = 0) -> SiliconRow:
    """``row`` replayed with the engine settings its harness did not record (rows with
    ``budget_isl`` only; others are returned as is): a token budget of ``prompts_per_step``
    x isl, and ``held_slots`` fewer sequences than the clients (an engine that admits a
    new request only when another finishes runs one below its clients)."""
    if not row.budget_isl or row.scenario is None:
        return row
    dep = row.scenario.deployments[0]
    budget = int(prompts_per_step) * row.budget_isl
    if dep.engine is not None and row.doc is not None:   # the engine resolves its graphs from these
        doc = copy.deepcopy(row.doc)
        eng = doc["deployments"][0]["engine"]
        seqs_key, tok_key = LIMIT_ARGS[eng["name"]]
        eng["args"][tok_key] = budget
        eng["args"][seqs_key] = max(1, int(eng["args"][seqs_key]) - int(held_slots))
        return replace(row, scenario=Scenario.model_validate(doc))
    sched = dep.scheduler.model_copy(update={"max_tokens_per_step": budget, "chunk_size": budget,
                                             "max_batch_size": max(1, dep.scheduler.max_batch_size - int(held_slots))})
    sc = row.scenario.model_copy(update={"deployments": [dep.model_copy(update={"scheduler": sched})]})
    return replace(row, scenario=sc)


def requests_from_measurements(df: pd.DataFrame) -> Requests:
    return Requests(df.arrival_s.to_numpy(float), df.prompt_tokens.to_numpy(np.int64).clip(1),
                    df.output_tokens.to_numpy(np.int64).clip(1))


def mape(pred, meas, what: str = "") -> float:
    """Mean absolute percentage error over the rows with a finite prediction and a measured
    value > 0; ``what`` (the file and the metric) names the comparison when there is none."""
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    ok = np.isfinite(p) & np.isfinite(m) & (m > 0)
    if not ok.any():
        simulated, measured = int(np.isfinite(p).sum()), int((np.isfinite(m) & (m > 0)).sum())
        raise HermesError(f"{what or 'prediction vs measurement'}: no comparable rows (of {len(p)}, "
                          f"{simulated} have a simulated value, {measured} a measured value > 0, none both)")
    return float(np.mean(np.abs(p[ok] - m[ok]) / m[ok]) * 100)
