"""Trace readers: one module per real-world format, all producing canonical rows.

Public API: ``READERS`` (format name -> ``FormatReader``); ``profiling.ingest.read_traces``
walks a path with one of them, validates and adds roofline features. Formats: aiconfigurator,
vidur, splitwise, torch, vllm-steps, csv. Measured serving data (request traces, end-to-end
runs) has its own readers here too: ``request_trace`` and ``serving``.
"""
from __future__ import annotations

from . import aiconfigurator, csv_map, kineto, splitwise, vidur, vllm_steps
from .base import FormatReader, ReadOptions, ReadOutput

READERS: dict[str, FormatReader] = {r.name: r for r in (
    aiconfigurator.READER, vidur.READER, splitwise.READER, kineto.READER, vllm_steps.READER, csv_map.READER)}

__all__ = ["READERS", "FormatReader", "ReadOptions", "ReadOutput"]
