"""Trace readers: one module per real-world format, all producing canonical rows.

Public API: ``READERS`` (format name -> ``FormatReader``), ``read_traces(path, fmt,
hardware=None, column_map=None) -> IngestResult`` (walk, read, validate, roofline; see
``profiling.ingest``) and ``IngestResult``. Formats: aiconfigurator, vidur, splitwise,
torch, vllm-steps, csv.
"""
from __future__ import annotations

from . import aiconfigurator, csv_map, kineto, splitwise, vidur, vllm_steps
from .base import FormatReader, ReadOptions, ReadOutput

READERS: dict[str, FormatReader] = {r.name: r for r in (
    aiconfigurator.READER, vidur.READER, splitwise.READER, kineto.READER, vllm_steps.READER, csv_map.READER)}


def __getattr__(name: str):
    # read_traces lives in profiling.ingest, which imports this package: resolve lazily.
    if name in ("read_traces", "IngestResult"):
        from .. import ingest
        return getattr(ingest, name)
    raise AttributeError(name)


__all__ = ["READERS", "FormatReader", "ReadOptions", "ReadOutput", "read_traces", "IngestResult"]
