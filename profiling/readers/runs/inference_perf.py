"""kubernetes-sigs/inference-perf ``per_request_lifecycle_metrics.json`` (report option
``request_lifecycle.per_request: true``): a JSON list, one entry per request with
``start_time``/``end_time`` (client ``perf_counter`` s), ``request``, ``response``, ``info`` and
``error`` (null or ``{error_type, error_msg}``). ``info`` follows either layout of the project's
history: before multimodal support (2025) ``{input_tokens, output_tokens, output_token_times}``;
since (2026) ``{request_metrics: {text: {input_tokens}}, response_metrics: {output_tokens,
server_usage, chunk_times, output_token_times}, input_tokens}``.

As inference-perf's report does: TTFT = output_token_times[0] - start_time (streamed requests
only, else NaN), E2E = end_time - start_time, ITL = successive output_token_times gaps. Token
counts are the server's ``usage`` when it sent one, else the client's. Arrivals are the
start times. The run's ``config.yaml`` beside the file, when present, gives the server type
(engine), model and load (rate, or concurrency for a ``concurrent`` load).

``prefix`` (``prefix.py``): from each entry's ``request`` payload text; when no entry kept one
and the data generator was ``shared_prefix``, from its declared shape in ``config.yaml`` or
the llm-d / BLIS harness's ``profile.yaml`` (beside the file or one folder up).

An experiment folder (the file in ``<exp>/results/``; each file looked for beside it, then one
folder up) may add the harness's ``exp-config.yaml`` (model, ``tensor_parallelism``, vLLM
arguments) and the server's ``vllm.log`` (version, ``non-default args``, the KV cache it sized
and any CPU offload). Precedence: the user's overrides, then vllm.log, exp-config.yaml, config.yaml.
``read_folder`` is that folder-level part, shared with ``inference_perf_stages`` (a run known
only by its per-stage reports).
"""
from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...errors import InputError
from ...jsonfile import read_json
from ...yamlfile import read_yaml
from .common import apply_overrides, engine_of, gaps, head_text, known_engine_args, normalize_args, numbers
from .prefix import payload_text, prompt_segments, spec_segments
from .schema import ServingRun, finish

NAME = "inference-perf"
# vLLM arguments that name the model or the HTTP front end: not the engine's behaviour.
_NOT_ENGINE = frozenset({"model", "model_tag", "served_model_name", "tokenizer", "host", "port", "uds",
                         "api_key", "root_path", "allowed_origins", "allowed_methods", "allowed_headers",
                         "ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs",
                         "uvicorn_log_level", "chat_template"})
# inference-perf's SharedPrefix defaults, used for a field the config leaves out (as it does).
_SHARED_PREFIX_DEFAULTS = {"num_groups": 10, "num_prompts_per_group": 10, "system_prompt_len": 100}
_SHARED_PREFIX_ALIASES = {"num_groups": ("num_groups", "num_unique_system_prompts"),
                          "num_prompts_per_group": ("num_prompts_per_group", "num_users_per_system_prompt"),
                          "system_prompt_len": ("system_prompt_len",)}


def detect(path: Path) -> bool:
    head = head_text(path, ".json", chars=20_000).lstrip()
    return head.startswith("[") and '"start_time"' in head and '"end_time"' in head and '"info"' in head


def _tokens(info: dict) -> tuple[Any, Any, list | None, str]:
    """(prompt tokens, output tokens, token times, which count) of one entry's ``info``."""
    resp = info.get("response_metrics") if isinstance(info.get("response_metrics"), dict) else None
    if resp is None:  # the pre-multimodal layout
        return info.get("input_tokens"), info.get("output_tokens"), info.get("output_token_times") or None, "client"
    text = ((info.get("request_metrics") or {}).get("text") or {})
    prompt, output = text.get("input_tokens", info.get("input_tokens")), resp.get("output_tokens")
    times = resp.get("output_token_times") or resp.get("chunk_times") or None
    usage = resp.get("server_usage") or {}
    if usage.get("completion_tokens") is not None and usage.get("prompt_tokens") is not None:
        return usage["prompt_tokens"], usage["completion_tokens"], times, "server"
    return prompt, output, times, "client"


def _config(folder: Path) -> tuple[dict, Path | None]:
    for name in ("config.yaml", "config.yml"):
        f = folder / name
        if f.is_file():
            return _mapping(f, "an inference-perf config"), f
    return {}, None


def _near(path: Path, name: str) -> Path | None:
    """``name`` beside the per-request file, else one folder up (the experiment folder)."""
    for folder in (path.parent, path.parent.parent):
        if (folder / name).is_file():
            return folder / name
    return None


def _mapping(f: Path, what: str) -> dict:
    doc = read_yaml(f, what)
    if not isinstance(doc, dict):
        raise InputError(f"not {what} (expected a mapping)", file=f)
    return doc


@dataclass
class _ServerLog:
    """What a vLLM server log states about the engine it started."""

    version: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    kv_cache: dict[str, Any] = field(default_factory=dict)
    offload_bytes: float | None = None
    skipped: list[str] = field(default_factory=list)


_VERSION = (re.compile(r"vLLM API server version:?\s*v?(\d[\w.+-]*)"),
            re.compile(r"Starting vLLM API server\b.*?\bversion:?\s*v?(\d[\w.+-]*)"))
_ARGS = re.compile(r"non-default args: (\{.*\})\s*$")
_KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_OFFLOAD = re.compile(r"""cpu_bytes_to_use['"]?\s*[:=]\s*([\d_]+(?:\.\d+)?)""")
# Everything the reader takes is logged while the server starts; a long run's log is not read past it.
_STARTED = "Application startup complete"
_MAX_LINE = 2**20


def _server_log(f: Path) -> _ServerLog:
    out = _ServerLog()
    try:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if len(line) > _MAX_LINE:
                    continue
                if not out.version:
                    hits = [m for m in (r.search(line) for r in _VERSION) if m]
                    if hits:
                        out.version = min(hits, key=lambda m: m.start()).group(1).rstrip(".,;")
                if not out.args and (m := _ARGS.search(line)):
                    out.args, out.skipped = _literal_dict(m.group(1))
                if "gpu_tokens" not in out.kv_cache and (m := _KV_TOKENS.search(line)):
                    out.kv_cache["gpu_tokens"] = int(m.group(1).replace(",", ""))
                if "available_gib" not in out.kv_cache and (m := _KV_GIB.search(line)):
                    out.kv_cache["available_gib"] = float(m.group(1))
                if out.offload_bytes is None and (m := _OFFLOAD.search(line)):
                    out.offload_bytes = float(m.group(1).replace("_", ""))
                if _STARTED in line:
                    break
    except OSError as e:
        raise InputError(f"cannot read the server log ({e.strerror or type(e).__name__})", file=f) from None
    return out


def _literal_dict(text: str) -> tuple[dict[str, Any], list[str]]:
    """A logged Python dict; entries whose value is no literal (an object's repr) are skipped
    and named, so one such entry does not cost the others."""
    try:
        whole = ast.literal_eval(text)
        if isinstance(whole, dict):
            return _plain_items(whole.items())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    items, skipped = {}, []
    for part in _top_level_items(text.strip()[1:-1]):
        try:
            one = ast.literal_eval("{" + part + "}")
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            m = re.match(r"""\s*['"]([^'"]+)['"]\s*:""", part)
            if m:
                skipped.append(m.group(1))
            continue
        if isinstance(one, dict):
            got, bad = _plain_items(one.items())
            items.update(got)
            skipped += bad
    return items, skipped


def _top_level_items(body: str) -> list[str]:
    """``body`` split at the commas outside brackets and quotes."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(body):
        ch = body[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    parts.append(body[start:])
    return [p for p in parts if p.strip()]


def _plain_items(items: Any) -> tuple[dict[str, Any], list[str]]:
    """Keep entries whose values JSON can hold (tuples and sets as lists)."""
    out, skipped = {}, []
    for k, v in items:
        ok, plain = _plain(v)
        if ok:
            out[str(k)] = plain
        else:
            skipped.append(str(k))
    return out, skipped


def _plain(v: Any) -> tuple[bool, Any]:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True, v
    if isinstance(v, (list, tuple, set, frozenset)):
        seq = sorted(v, key=repr) if isinstance(v, (set, frozenset)) else v
        got = [_plain(x) for x in seq]
        return all(ok for ok, _ in got), [x for _, x in got]
    if isinstance(v, dict):
        got = {str(k): _plain(x) for k, x in v.items()}
        return all(ok for ok, _ in got.values()), {k: x for k, (_, x) in got.items()}
    return False, None


def _engine_args(args: dict[str, Any], engine: str) -> dict[str, Any]:
    """The entries that are the engine's own arguments (the harness's and front end's dropped)."""
    known = known_engine_args().get(engine, frozenset())
    return {k: v for k, v in normalize_args(args).items() if k in known and k not in _NOT_ENGINE}


def _shared_prefix(cfg: dict, f: Path) -> dict[str, Any] | None:
    """The ``shared_prefix`` generator's shape in either vocabulary, or None when the run's
    data was another kind."""
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    if str(data.get("type") or "").lower() != "shared_prefix":
        return None
    sp = data.get("shared_prefix") if isinstance(data.get("shared_prefix"), dict) else {}
    out: dict[str, Any] = {"defaulted": []}
    for name, aliases in _SHARED_PREFIX_ALIASES.items():
        given = [a for a in aliases if sp.get(a) is not None]
        if not given:
            out[name] = _SHARED_PREFIX_DEFAULTS[name]
            out["defaulted"].append(name)
            continue
        v = sp[given[0]]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "system_prompt_len" else 1):
            raise InputError(f"must be a {'non-negative' if name == 'system_prompt_len' else 'positive'} "
                             f"integer, got {v!r}", file=f, column=f"data.shared_prefix.{given[0]}")
        out[name] = v
    out["multi_turn"] = sp.get("enable_multi_turn_chat") is True
    return out


def read(path: str | Path, **overrides: Any) -> ServingRun:
    p = Path(path)
    entries = read_json(p, "per-request report")
    if not isinstance(entries, list) or not entries:
        raise InputError("not an inference-perf per-request report (expected a non-empty JSON list)", file=p)
    rows, sources = [], set()
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            raise InputError("not a request entry (expected a JSON object)", file=p, row=i)
        for k in ("start_time", "end_time"):
            if e.get(k) is None:
                raise InputError("missing field", file=p, row=i, column=k)
        info = e.get("info") if isinstance(e.get("info"), dict) else {}
        prompt, output, times, src = _tokens(info)
        err = e.get("error")
        rows.append((e["start_time"], e["end_time"], prompt, output, times, err, payload_text(e.get("request"))))
        sources.add(src if err is None else "")
    start = numbers([r[0] for r in rows], p, "start_time", allow_null=False)
    end = numbers([r[1] for r in rows], p, "end_time", allow_null=False)
    ok = np.array([r[5] is None for r in rows])
    before = end < start
    if before.any():
        raise InputError("end_time precedes start_time", file=p, row=int(np.flatnonzero(before)[0]) + 1,
                         column="end_time")
    ttft, itl = np.full(len(rows), math.nan), []
    for i, r in enumerate(rows):
        times = gaps(r[4], p, "info.response_metrics.output_token_times", i + 1)
        if times and ok[i]:
            ttft[i] = times[0] - start[i]
            if ttft[i] < 0:
                raise InputError("first token time precedes start_time", file=p, row=i + 1,
                                 column="info.response_metrics.output_token_times")
            itl.append([b - a for a, b in pairwise(times)])
        else:
            itl.append(None)
    df = pd.DataFrame({
        "request_id": [str(i) for i in range(len(rows))],
        "arrival_s": start - start.min(),
        "prompt_tokens": numbers([r[2] for r in rows], p, "info.input_tokens"),
        "output_tokens": numbers([r[3] for r in rows], p, "info.output_tokens"),
        "ttft_s": ttft, "e2e_s": np.where(ok, end - start, np.nan), "itl_s": itl, "ok": ok,
        "error": ["" if r[5] is None else _error_text(r[5]) for r in rows]})
    with np.errstate(invalid="ignore", divide="ignore"):
        out = df["output_tokens"].to_numpy(dtype=float)
        df["tpot_s"] = np.where(out > 1, (df["e2e_s"] - df["ttft_s"]) / (out - 1), np.nan)

    counted = "server usage" if sources - {""} == {"server"} else "client tokenizer"
    folder = read_folder(p, overrides, [
        "ttft_s = output_token_times[0] - start_time, e2e_s = end_time - start_time (client clock)",
        "tpot_s = (e2e_s - ttft_s) / (output_tokens - 1)",
        f"token counts from the {counted}", "arrival_s = start_time - first start_time"])
    df["prefix"], prefix_note = _prefix(rows, start, df["prompt_tokens"].to_numpy(dtype=float), folder)
    return finish(df, {**folder.info, "notes": (*folder.info["notes"], prefix_note)}, p)


@dataclass(frozen=True)
class ResultsFolder:
    """What an inference-perf results folder says besides its request reports: the run's
    config (``config.yaml``, else the harness's ``profile.yaml``) and the run info built from
    it, the experiment folder's exp-config.yaml and vllm.log, and the user's overrides."""

    info: dict[str, Any]
    config: dict[str, Any]
    config_file: Path | None
    configs: tuple[tuple[dict, Path | None], ...]  # config.yaml's (or profile's), then profile.yaml's

    def shared_prefix(self) -> tuple[dict[str, Any], Path] | None:
        """The ``shared_prefix`` data shape (``_shared_prefix``) and the file that states it,
        or None when the first config naming the data says it was another kind."""
        for cfg, f in self.configs:
            if f is None or not isinstance(cfg.get("data"), dict):
                continue
            spec = _shared_prefix(cfg, f)
            return None if spec is None else (spec, f)
        return None


def read_folder(report: Path, overrides: dict[str, Any], notes: list[str], *,
                client: dict[str, Any] | None = None, fmt: str = NAME) -> ResultsFolder:
    """The folder-level part of a run read from ``report`` (a report file in the results
    folder): engine, model, client (``client``, else the config's load: a concurrent load's
    closed loop, one stage's rate), TP, engine arguments and facts, overrides on top;
    ``notes`` are the caller's, the folder's are added after them."""
    cfg, cfg_file = _config(report.parent)
    profile_file = _near(report, "profile.yaml")
    profile = _mapping(profile_file, "a benchmark profile") if profile_file else {}
    if cfg_file is None and profile:  # the harness's copy of the same inference-perf config
        cfg, cfg_file = profile, profile_file
    server = cfg.get("server") if isinstance(cfg.get("server"), dict) else {}
    if client is None:
        load = cfg.get("load") if isinstance(cfg.get("load"), dict) else {}
        stages = [s for s in load.get("stages") or [] if isinstance(s, dict)]
        client = {"kind": "trace"}
        if load.get("type") == "concurrent" and stages and stages[0].get("concurrency_level"):
            client = {"kind": "closed_loop", "concurrency": int(stages[0]["concurrency_level"])}
        elif len(stages) == 1 and stages[0].get("rate"):
            client["rate"] = float(stages[0]["rate"])
    info: dict[str, Any] = {
        "engine": engine_of(str(server.get("type") or "")), "model": str(server.get("model_name") or ""),
        "client": client, "source": str(report), "format": fmt, "notes": list(notes)}
    kv_cache = _experiment(report, info)
    out = apply_overrides(info, overrides, report)
    if kv_cache:
        if "gpu_tokens" in kv_cache:
            # vLLM's block is 16 tokens on GPUs unless --block-size set another.
            block = out["engine_args"].get("block_size") or 16
            kv_cache["num_gpu_blocks"] = kv_cache["gpu_tokens"] // int(block)
        out["engine_facts"] = {**out.get("engine_facts", {}), "kv_cache": kv_cache}
    out["notes"] = tuple(out["notes"])
    return ResultsFolder(out, cfg, cfg_file, ((cfg, cfg_file), (profile, profile_file)))


def _prefix(rows: list[tuple], start: np.ndarray, prompt: np.ndarray,
            folder: ResultsFolder) -> tuple[list[str], str]:
    """The ``prefix`` column and a note saying where it came from."""
    texts = [r[6] for r in rows]
    have = sum(t is not None for t in texts)
    if have:
        return prompt_segments(texts, prompt), f"prefix: from the prompt text of {have} of {len(rows)} requests"
    found = folder.shared_prefix()
    if found is None:
        return [""] * len(rows), "prefix: not recorded (no prompt text and no shared_prefix data spec)"
    spec, f = found
    order = np.argsort(start, kind="stable")  # the generator's i-th prompt is the i-th sent
    # Each load stage starts its data generator afresh (slot 0 again) once the previous stage
    # has drained: the stages are the runs of requests between the widest start-time gaps.
    load = folder.config.get("load") if isinstance(folder.config.get("load"), dict) else {}
    n_stages = min(len([s for s in load.get("stages") or [] if isinstance(s, dict)]), len(rows))
    gaps = np.diff(start[order])
    cuts = np.sort(np.argsort(gaps, kind="stable")[::-1][:max(n_stages - 1, 0)] + 1) if len(gaps) else []
    values: list[str] = []
    for part in np.split(np.arange(len(rows)), cuts):
        values += spec_segments(len(part), prompt[order][part], spec["num_groups"], spec["num_prompts_per_group"],
                                spec["system_prompt_len"], multi_turn=spec["multi_turn"])
    col = [""] * len(rows)
    for k, i in enumerate(order):
        col[i] = values[k]
    return col, (f"prefix: no prompt text; from {f.name}'s shared_prefix ({shared_prefix_shape(spec)}): "
                 f"request i of a load stage ({max(n_stages, 1)}) in start order uses prompt slot "
                 "i % (groups x prompts)")


def shared_prefix_shape(spec: dict[str, Any]) -> str:
    """One phrase describing a ``shared_prefix`` shape, and which fields were defaulted."""
    shape = (f"{spec['num_groups']} groups x {spec['num_prompts_per_group']} prompts, system prompt "
             f"{spec['system_prompt_len']} tokens{', multi-turn' if spec['multi_turn'] else ''}")
    return shape + (f"; inference-perf defaults for {', '.join(spec['defaulted'])}" if spec["defaulted"] else "")


def _experiment(p: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Fill ``info`` from the experiment folder's exp-config.yaml and vllm.log (the log wins);
    returns the KV cache facts the log states."""
    args: dict[str, Any] = {}
    sources = []
    exp_file = _near(p, "exp-config.yaml")
    if exp_file is not None:
        exp = _mapping(exp_file, "an experiment config")
        if exp.get("model") is not None:
            info["model"] = str(exp["model"])
        tp = exp.get("tensor_parallelism")
        if tp is not None:
            if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
                raise InputError(f"must be a positive integer, got {tp!r}", file=exp_file,
                                 column="tensor_parallelism")
            info["tp"] = tp
        args.update(_engine_args(exp, "vllm" if info["engine"] == "unknown" else info["engine"]))
        sources.append(exp_file.name)
    log_file = _near(p, "vllm.log")
    kv_cache: dict[str, Any] = {}
    if log_file is not None and info["engine"] not in ("vllm", "unknown"):
        info["notes"].append(f"{log_file.name} not read: the run's server is {info['engine']}")
    elif log_file is not None:
        log = _server_log(log_file)
        if log.version or log.args:
            info["engine"] = "vllm"  # the log is the vLLM server's own
        if log.version:
            info["engine_version"] = log.version
        args.update(_engine_args(log.args, "vllm"))
        if log.offload_bytes is not None and "kv_offloading_size" not in _engine_args(log.args, "vllm"):
            gib = round(log.offload_bytes / 2**30, 6)
            if "kv_offloading_size" in known_engine_args()["vllm"]:
                args["kv_offloading_size"] = gib
            else:
                kv_cache["cpu_offload_gib"] = gib
        kv_cache.update(log.kv_cache)
        if log.skipped:
            info["notes"].append(f"{log_file.name}: non-default args not literals, not kept: "
                                 f"{', '.join(log.skipped)}")
        sources.insert(0, log_file.name)
    if args:
        info["engine_args"] = args
        info["notes"].append(f"engine arguments from {' over '.join(sources)}")
    return kv_cache


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return f"{err.get('error_type', 'error')}: {err.get('error_msg', '')}".strip()
    return json.dumps(err)[:200]
