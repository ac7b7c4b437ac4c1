"""Click options shared by several commands."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from profiling.errors import InputError
from profiling.yamlfile import read_yaml


def _use_catalogs(ctx: click.Context, param: click.Parameter, files: tuple[str, ...]) -> None:
    """Validate the extra catalog files now (one-line error naming the file), then put them
    on ``$HERMES_CATALOG`` so every catalog lookup of this process and of the worker
    processes it starts sees the new device."""
    if not files:
        return
    from profiling.hardware import CATALOG_ENV, load_catalog
    paths = [str(Path(f).resolve()) for f in files]
    load_catalog(*paths)
    old = [p for p in os.environ.get(CATALOG_ENV, "").split(os.pathsep) if p]
    os.environ[CATALOG_ENV] = os.pathsep.join(old + paths)


catalog_option = click.option(
    "--catalog", multiple=True, expose_value=False, callback=_use_catalogs, metavar="FILE",
    help="Extra hardware catalog YAML: the spec sheet of a device the built-in catalog lacks "
         "(repeatable; the same as listing it in $HERMES_CATALOG).")


def load_column_map(spec: str | None) -> dict | str | None:
    """``--map`` is either FIELD=COLUMN[:UNIT],... or a YAML file of the same mapping."""
    if not spec:
        return None
    p = Path(spec)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        doc = read_yaml(p, "column map file")
        if not isinstance(doc, dict):
            raise InputError("a column map file holds FIELD: COLUMN[:UNIT] pairs", file=p)
        return {str(k): str(v) for k, v in doc.items()}
    return spec


# Options of a plain-CSV source (`--format csv`).
csv_options = [
    click.option("--map", "column_map",
                 help="csv: FIELD=COLUMN[:UNIT],... or a YAML file (units us/ms/s, B/KB/MB/GB)."),
    click.option("--op", help="csv: operator kind of every row when no column gives it."),
    click.option("--dtype", help="csv: dtype of every row when no column gives it."),
]


# read_run's override name -> the flag that sets it
RUN_OVERRIDE_FLAGS = {"engine": "--engine", "version": "--engine-version", "model": "--model", "gpu": "--gpu",
                      "tp": "--tp"}


def run_override_options(scope: str):
    """--engine, --engine-version, --model, --gpu, --tp: what a serving-run file does not say,
    given to the command as one ``overrides`` mapping in ``profiling.readers.runs.read_run``'s
    names (only the flags set). ``scope`` starts each help line (e.g. "run:")."""
    options = [
        click.option("--engine", type=click.Choice(["vllm", "sglang", "trtllm"]), default=None,
                     help=f"{scope} the serving engine, where the file does not say"),
        click.option("--engine-version", default=None, help=f"{scope} the engine's release (e.g. 0.19.0)"),
        click.option("--model", default=None, help=f"{scope} the model served (catalog or Hugging Face name)"),
        click.option("--gpu", default=None, help=f"{scope} the GPU (hardware catalog name)"),
        click.option("--tp", type=click.IntRange(1), default=None, help=f"{scope} tensor-parallel size"),
    ]

    def deco(f):
        @functools.wraps(f)
        def command(*args, engine, engine_version, model, gpu, tp, **kwargs):
            given = {"engine": engine, "version": engine_version, "model": model, "gpu": gpu, "tp": tp}
            return f(*args, overrides={k: v for k, v in given.items() if v is not None}, **kwargs)
        return with_options(options)(command)
    return deco


def with_options(options: list):
    """Apply a list of click options as one decorator (first listed = first in --help)."""
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco
