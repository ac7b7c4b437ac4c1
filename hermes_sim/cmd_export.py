"""`hermes-sim export`: a scenario's deployments as engine commands, manifests and a benchmark."""
from __future__ import annotations

from pathlib import Path

import click

from profiling.errors import HermesError

from .options import catalog_option

TARGETS = ("vllm", "sglang", "trtllm", "k8s", "llm-d", "dynamo", "all")


def _service_images(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, image = v.partition("=")
        if not sep or not name or not image:
            raise HermesError(f"--service-image: '{v}' is not NAME=IMAGE")
        out[name] = image
    return out


@click.command("export")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(TARGETS), required=True,
              help="engine launch commands (vllm, sglang, trtllm), Kubernetes manifests (k8s), llm-d Helm "
                   "values, a Dynamo graph, or every target that can express the scenario (all)")
@click.option("-o", "--out", "outdir", required=True, type=click.Path(file_okay=False),
              help="folder for the files and their README.md")
@click.option("--image", default=None,
              help="container image of the engines (default: the engine's public image of its release; "
                   "dynamo: Dynamo's runtime image)")
@click.option("--engine-version", default=None,
              help="release of the engine for deployments without an engine: block (vllm 0.19.0, sglang 0.5.4, "
                   "trtllm 1.0.0 by default)")
@click.option("--engine", type=click.Choice(("vllm", "sglang", "trtllm")), default=None,
              help="k8s, llm-d, dynamo: the engine of deployments without an engine: block (default vllm)")
@click.option("--data-parallel", is_flag=True,
              help="engine targets: one data-parallel engine per role instead of one engine per replica")
@click.option("--service-image", "service_images", multiple=True, metavar="NAME=IMAGE",
              help="k8s: the image of a pipeline service (repeatable)")
@click.option("--dynamo-version", default=None, help="dynamo: the runtime images' release (default 0.7.1)")
@catalog_option
def export_cmd(scenario: str, target: str, outdir: str, image: str | None, engine_version: str | None,
               engine: str | None, data_parallel: bool, service_images: tuple[str, ...],
               dynamo_version: str | None) -> None:
    """Write SCENARIO's deployments (e.g. a search's best configuration) as launch commands or
    manifests for TARGET, the benchmark that checks the prediction, and a README.md."""
    from search.export import export

    if not Path(scenario).is_file():
        raise HermesError(f"{scenario}: scenario file not found")
    files = export(scenario, target, outdir, image=image, engine_version=engine_version,
                   data_parallel=data_parallel, engine=engine, service_images=_service_images(service_images),
                   **({"dynamo_version": dynamo_version} if dynamo_version else {}))
    click.echo(f"wrote {len(files)} files to {outdir} (see {Path(outdir) / 'README.md'})")


COMMANDS: list[click.Command] = [export_cmd]
