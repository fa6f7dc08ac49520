"""``harmonia data convert``: ClickMe TFRecord shards <-> harmonia's dataset format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

CONVERT_HELP = """Convert ClickMe TFRecord shards to harmonia's format, or write harmonization-style shards.

SRC is ClickMe shards (a .tfrecords file, a folder of shards or a quoted glob; the three
published layouts are detected per file: harmonization JPEG shards, ClickMe 1.0 raw
float32 256x256 records, adversarial-alignment raw float32 224x224 records) or a
harmonia dataset folder. No TensorFlow is needed; record CRCs are checked.

--to harmonia: OUT is a harmonia dataset folder (PNG images, .npy maps). By default the
release's preprocessing is applied (224x224; maps resized to 64, Gaussian blur 10/10,
resized to 224), so evaluating OUT gives scores comparable with published ones;
--preprocess none keeps records as stored.

--to harmonization: OUT is a folder of {split}-{i}.tfrecords shards (JPEG image 256x256,
JPEG heatmap, int64 label) readable by the harmonizer release's loader.

A split (or a shard set) appears whole when the conversion ends, replacing an older one
of that name; a run killed part-way leaves only OUT/.SPLIT.partial, which the next run
removes. A 0-byte input file is an error (a broken copy, not an empty split).

Examples:

  harmonia data convert clickme/val data/clickme-val --to harmonia --split val

  harmonia data convert data/sim-clickme shards/ --to harmonization --split test --shard-size 512
"""


@user_errors
def convert_command(
    src: Path = typer.Argument(..., help="ClickMe shard file / folder / glob, or a harmonia dataset folder."),
    out: Path = typer.Argument(..., help="Output: harmonia dataset folder, or folder of shards."),
    to: str = typer.Option("harmonia", "--to", help="Target format: 'harmonia' or 'harmonization'."),
    split: Optional[str] = typer.Option(None, help="Split to write (harmonia) or to read and name shards by (harmonization).", show_default="guessed from SRC (train/val/test)"),
    preprocess: Optional[str] = typer.Option(None, help="For ClickMe sources: 'release' or 'none'.", show_default="release for --to harmonia, none for --to harmonization"),
    shard_size: int = typer.Option(256, "--shard-size", min=1, help="Records per shard (--to harmonization)."),
    quality: int = typer.Option(95, min=1, max=100, help="JPEG quality of written shards."),
    name: Optional[str] = typer.Option(None, help="Dataset name stored in harmonia.json.", show_default="SRC's name"),
    workers: int = typer.Option(0, min=0, help="DataLoader worker processes for decoding."),
    no_verify_crc: bool = typer.Option(False, "--no-verify-crc", help="Skip TFRecord CRC checks (faster, unsafe)."),
) -> None:
    from harmonia.data.convert import convert

    if preprocess not in (None, "release", "none"):
        raise ValueError(f"--preprocess must be 'release' or 'none', got {preprocess!r}")
    with progress_callback(f"Converting to {to}") as update:
        result = convert(
            src, out, to=to, split=split, preprocess=preprocess, shard_size=shard_size, quality=quality,
            name=name, num_workers=workers, verify_crc=not no_verify_crc, progress=update,
        )
    what = f"{len(result.files)} shard(s)" if result.target == "harmonization" else f"split {result.files[0].name!r}"
    note = " [yellow](SYNTHETIC data)[/]" if result.synthetic else ""
    console.print(
        f"Wrote {result.count} records to {result.out} ({what}; source: {', '.join(result.source_formats)}){note}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``harmonia data convert`` to the ``harmonia data`` group."""
    app.command("convert", help=reflow(CONVERT_HELP))(convert_command)
