"""A plan as one standalone Python file: measure its kernels where the GPU is and this project is not.

``plan_script(plan, gpu)`` returns the text of a script that needs only PyTorch (and NCCL
through ``torch.distributed`` for all-reduces, launched with torchrun). The plan's rows are
embedded in it, so the GPU machine needs that one file. It times exactly the plan's shapes
(CUDA events, warm-up, median of repeats; a CPU fallback with ``time.perf_counter`` when CUDA
is absent, named in the ``source`` column) and writes a CSV in the canonical trace schema,
which ``hermes-sim profile ingest --format csv`` and ``calibrate --few-rows`` read as it is.
"""
from __future__ import annotations

import math

import pandas as pd

from .errors import HermesError
from .plan import TIMED_RUNS, WARMUP_RUNS
from .schema import COLUMNS, NUMERIC_SHAPE

# Plan columns the script carries per row (the shape, what the kernel is, its rank).
_KEEP = ("op", "name", *NUMERIC_SHAPE, "collective", "dtype", "kv_dtype", "plan_rank")


def _literal(v):
    """A plan cell as a plain Python literal (integral floats as ints; NaN and None dropped)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if hasattr(v, "item"):  # numpy scalars
        return _literal(v.item())
    return v if isinstance(v, (int, float)) else str(v)


def plan_rows(plan: pd.DataFrame) -> list[dict]:
    """The plan's rows as dicts of the columns the script needs, in plan order."""
    if "op" not in plan or not len(plan):
        raise HermesError("a measuring script needs a plan with rows and an 'op' column")
    rows = []
    for rec in plan.to_dict("records"):
        row = {c: _literal(rec.get(c)) for c in _KEEP if c in rec}
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def plan_script(plan: pd.DataFrame, gpu: str) -> str:
    """The standalone measuring script of ``plan`` (planned for ``gpu``, the catalog name its
    rows are labelled with)."""
    rows = plan_rows(plan)
    body = "[\n" + "".join(f"    {r!r},\n" for r in rows) + "]"
    worlds = sorted({int(r.get("world", 1)) for r in rows if r["op"] == "collective"})
    torchrun = "".join(f"#     torchrun --nproc_per_node={w} measure.py -o measured_allreduce_w{w}.csv\n"
                       for w in worlds) or "#     (this plan has no all-reduce)\n"
    return (_TEMPLATE.replace("@N@", str(len(rows))).replace("@GPU@", gpu).replace("@TORCHRUN@", torchrun)
            .replace("@PLAN@", body).replace("@COLUMNS@", repr(list(COLUMNS)))
            .replace("@WARMUP@", str(WARMUP_RUNS)).replace("@REPEATS@", str(TIMED_RUNS)))


_TEMPLATE = '''#!/usr/bin/env python3
# Measure a HERMES kernel plan: @N@ kernels planned for @GPU@ (written by `hermes-sim profile plan --script`).
#
# Needs only PyTorch; no HERMES install. All-reduces need NCCL through torch.distributed and
# one torchrun launch per world size. Run on the GPU machine:
#     python measure.py -o measured.csv                 # GEMM, attention, elementwise on GPU 0
@TORCHRUN@#
# Each run writes a CSV in HERMES's canonical trace schema. Bring the CSVs back (one folder) and run
#     hermes-sim profile ingest --format csv FOLDER -o measured.parquet
#     hermes-sim calibrate --few-rows measured.parquet -o my-gpu-surrogate
# (with one CSV, `calibrate --few-rows measured.csv` reads it as it is).
# Timing: CUDA events around each run, --warmup untimed runs, the median of --repeats timed runs.
# Without CUDA the script falls back to the CPU and time.perf_counter (to test the script, not
# to measure the GPU): the `source` column says which.
import argparse
import csv
import os
import statistics
import sys
import time

PLAN = @PLAN@
HARDWARE = "@GPU@"
COLUMNS = @COLUMNS@
WARMUP, REPEATS = @WARMUP@, @REPEATS@
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
KERNEL = {"gemm": "torch.matmul", "attn_prefill": "sdpa", "attn_decode": "sdpa", "elementwise": "torch",
          "collective": "dist.all_reduce"}


def _i(row, col, default=1):
    return int(row.get(col, default))


def _dtype(torch, name):
    return getattr(torch, DTYPES[name])


def gemm(torch, row, dev, dt):
    """torch.matmul of an (m, k) by a (k, n) matrix in the planned dtype."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(_i(row, "m"), _i(row, "k"), generator=g).to(dev, dt)
    b = torch.randn(_i(row, "k"), _i(row, "n"), generator=g).to(dev, dt)
    return lambda: torch.matmul(a, b)


def attention(torch, row, dev, dt):
    """scaled_dot_product_attention: prefill is causal (a q_len chunk at the end of kv_len
    keys), decode is one query per sequence against kv_len keys; grouped KV heads."""
    import torch.nn.functional as F
    b, h, hk, d = _i(row, "batch"), _i(row, "heads"), _i(row, "kv_heads", _i(row, "heads")), _i(row, "head_dim", 128)
    kv = _i(row, "kv_len")
    q_len = _i(row, "q_len", kv) if row["op"] == "attn_prefill" else 1
    q = torch.randn(b, h, q_len, d, device=dev, dtype=dt)
    k = torch.randn(b, hk, kv, d, device=dev, dtype=dt)
    v = torch.randn(b, hk, kv, d, device=dev, dtype=dt)
    mask, causal = None, False
    if q_len > 1 and q_len == kv:
        causal = True
    elif q_len > 1:  # query i sits at position kv - q_len + i and sees the keys up to it
        pos = torch.arange(q_len, device=dev)[:, None] + (kv - q_len)
        mask = torch.arange(kv, device=dev)[None, :] <= pos
    try:
        F.scaled_dot_product_attention(q[:, :, :1], k[:, :, :1], v[:, :, :1], enable_gqa=True)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=hk != h)
    except TypeError:  # torch < 2.5 has no enable_gqa: the grouped heads expanded
        k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def elementwise(torch, row, dev, dt):
    """The torch op the row names (mul, silu, an RMS norm; add otherwise) over `elements`."""
    n, name = _i(row, "elements"), str(row.get("name", "add")).lower()
    a = torch.randn(n, device=dev, dtype=dt)
    b = torch.randn(n, device=dev, dtype=dt)
    if "mul" in name:
        return lambda: torch.mul(a, b)
    if "silu" in name or "act" in name:
        return lambda: torch.nn.functional.silu(a)
    if "norm" in name:
        return lambda: a * torch.rsqrt(a.float().pow(2).mean() + 1e-6).to(dt)
    return lambda: torch.add(a, b)


def all_reduce(torch, row, dev, dt):
    """dist.all_reduce (sum) of a msg_bytes tensor in the planned dtype."""
    import torch.distributed as dist
    n = max(1, _i(row, "msg_bytes") // DTYPE_BYTES[row.get("dtype", "bf16")])
    x = torch.ones(n, device=dev, dtype=dt)
    return lambda: dist.all_reduce(x)


SETUPS = {"gemm": gemm, "attn_prefill": attention, "attn_decode": attention, "elementwise": elementwise,
          "collective": all_reduce}


def time_ms(torch, run, cuda, warmup, repeats, barrier=None):
    """Milliseconds of each of `repeats` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    if cuda:
        torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        if barrier is not None:
            barrier()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            out.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            run()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def out_row(row, times_ms, hardware, source, stack):
    """One canonical trace row: the plan's shape and the median and spread of `times_ms`."""
    out = {c: row[c] for c in COLUMNS if c in row}
    if row["op"] == "elementwise" and "io_bytes" not in out:
        out["io_bytes"] = 3 * _i(row, "elements") * DTYPE_BYTES.get(row.get("dtype", "bf16"), 2)
    out.update(hardware=hardware, latency_ms=statistics.median(times_ms),
               latency_std_ms=statistics.stdev(times_ms) if len(times_ms) > 1 else 0.0,
               samples=len(times_ms), source=source, stack=stack, kernel=KERNEL.get(row["op"], ""))
    return out


def write_csv(rows, path):
    """The rows under the canonical columns (blank where a row has no value), replaced whole."""
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r[c]) for c in COLUMNS})
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Measure the embedded HERMES kernel plan (%d kernels)." % len(PLAN))
    ap.add_argument("-o", "--output", default="measured.csv", help="CSV to write (canonical trace schema)")
    ap.add_argument("--hardware", default=HARDWARE, help="GPU name the rows carry (default: the plan's)")
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--repeats", type=int, default=REPEATS)
    a = ap.parse_args(argv)
    if a.warmup < 0 or a.repeats < 1:
        sys.exit("measure.py: --warmup must be >= 0 and --repeats >= 1")
    try:
        import torch
    except ImportError:
        sys.exit("measure.py: needs PyTorch (pip install torch)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    rank = int(os.environ.get("RANK", "0"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dev = torch.device("cuda")
        source = "plan-script:cuda-events:" + torch.cuda.get_device_name()
    else:
        dev = torch.device("cpu")
        source = "plan-script:cpu-perf_counter (no CUDA: CPU timings, not the GPU's)"
        print("measure.py: no CUDA device: timing on the CPU with time.perf_counter", file=sys.stderr)
    stack = "torch %s" % torch.__version__ + (" cuda %s" % torch.version.cuda if cuda else " cpu")
    barrier = None
    if world > 1:  # under torchrun: this launch measures the plan's all-reduces of its world size
        import torch.distributed as dist
        dist.init_process_group("nccl" if cuda else "gloo")
        barrier = dist.barrier
        todo = [r for r in PLAN if r["op"] == "collective" and _i(r, "world") == world]
    else:
        todo = [r for r in PLAN if r["op"] != "collective"]
    rows, skipped = [], []
    for i, r in enumerate(todo):
        if r.get("dtype", "bf16") not in DTYPES or (r["op"] == "collective" and r.get("collective") != "all_reduce"):
            skipped.append("%s %s" % (r["op"], r.get("dtype")))
            continue
        run = SETUPS[r["op"]](torch, r, dev, _dtype(torch, r.get("dtype", "bf16")))
        t = time_ms(torch, run, cuda, a.warmup, a.repeats, barrier)
        if barrier is not None:  # each repeat takes as long as its slowest rank
            tt = torch.tensor(t, dtype=torch.float64, device=dev)
            torch.distributed.all_reduce(tt, op=torch.distributed.ReduceOp.MAX)
            t = tt.tolist()
        rows.append(out_row(r, t, a.hardware, source, stack))
        if rank == 0:
            print("[%d/%d] %s %.4f ms" % (i + 1, len(todo), r["op"], rows[-1]["latency_ms"]), file=sys.stderr)
    if rank == 0:
        write_csv(rows, a.output)
        left = [r for r in PLAN if r["op"] == "collective"] if world == 1 else []
        print("measure.py: %d rows -> %s%s%s" % (
            len(rows), a.output,
            "; %d all-reduce(s) need torchrun (see the header)" % len(left) if left else "",
            "; not measured: %s" % ", ".join(sorted(set(skipped))) if skipped else ""), file=sys.stderr)
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
