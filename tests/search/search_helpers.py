"""Helpers for the search tests: a small real space (100-200 requests), a CLI runner, ports."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]


def small_space(*, requests: int = 120, rate: float = 6.0, objective: str = "tokens_per_dollar",
                params: dict | None = None, slo: dict | None = None) -> dict:
    """A chat deployment of Llama-3.1-8B; the search picks GPU type, replicas and batching."""
    return {
        "name": "small",
        "base": {
            "name": "small-chat", "seed": 0, "surrogate": "roofline",  # no trained bundle needed
            "deployments": [{"name": "llm", "model": "Llama-3.1-8B", "hardware": "H100-SXM",
                             "replicas": 2, "tp": 1,
                             "scheduler": {"policy": "continuous", "max_batch_size": 128}}],
            "workload": {"arrival": "poisson", "rate_rps": rate, "num_requests": requests,
                         "prompt_tokens": {"dist": "lognormal", "mean": 512, "max": 2048},
                         "output_tokens": {"dist": "lognormal", "mean": 96, "max": 512}},
            "slo": slo or {"ttft_p90_s": 1.0, "tpot_p90_s": 0.05},
        },
        "objective": objective,
        "params": params or {
            "deployments.0.hardware": {"choices": ["H100-SXM", "A100-80GB", "L40S"]},
            "deployments.0.replicas": {"low": 1, "high": 2},
            "deployments.0.scheduler.policy": {"choices": ["continuous", "chunked"]},
            "deployments.0.scheduler.chunk_size": {
                "choices": [256, 1024], "when": {"deployments.0.scheduler.policy": "chunked"}},
            # price-neutral knob: branch and bound cannot prove the optimum (and stop) within
            # the few trials these tests ask for, so they see exactly N trials
            "deployments.0.scheduler.max_batch_size": {"choices": [64, 128, 256]},
        },
    }


def run_cli(args: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 150,
            ) -> subprocess.CompletedProcess:
    """Run `hermes-sim ARGS` in a fresh interpreter (the real console entry point)."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hermes_sim.cli", *args], cwd=cwd, env=e,
                          capture_output=True, text=True, timeout=timeout)


def run_cli_measured(args: list[str], *, cwd: Path, timeout: float = 150) -> tuple[int, str, int]:
    """Run `hermes-sim ARGS` in a fresh interpreter; (exit status, stderr, that process's peak
    resident memory in KiB, read from /proc's VmHWM every 20 ms while it runs). The kernel's
    ru_maxrss of a child starts at its parent's size (fork, then exec), so it cannot say how
    much the command itself took."""
    import tempfile
    import time

    def hwm(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    peak = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "hermes_sim.cli", *args], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            peak = max(peak, hwm(proc.pid))
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(args, timeout)
            time.sleep(0.02)
        err.seek(0)
        return proc.returncode, err.read().decode(), peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; reaped either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
