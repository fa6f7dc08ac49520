"""``harmonia data clicks``: raw ClickMe click table -> harmonia dataset with per-subject maps."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harmonia.cli.common import console, reflow, user_errors
from harmonia.cli.progress import progress_callback

CLICKS_HELP = """Build human feature-importance maps from raw ClickMe clicks and write a dataset.

TABLE is a CSV (click lists as "[12, 40, 41]") or parquet file, one row per trial:
image name, user, click x list, click y list, catch-trial accuracy, is-mobile flag
(optional: label). Steps: drop failed catch trials, mobile trials, repeated
(user, image) pairs and trials with <= --min-clicks clicks; keep the first --max-clicks
clicks; drop images with fewer than --min-subjects trials; mean of the count maps,
disk blur applied twice (21 px at 256), resize to 256, centre crop 224. The raw
per-subject count maps are kept (subjects/ID.npy) so `harmonia ceiling` can compute the
human ceiling and floor.

Examples:

  harmonia data clicks clicks.csv --images imagenet_val/ --out data/clickme2

  harmonia data clicks trials.parquet --images co3d/ --out data/co3d --min-subjects 6 \\
      --col image=img --col catch=acc --keep-mobile
"""


def _parse_columns(col: list[str]) -> dict[str, str]:
    out = {}
    for c in col:
        field, sep, name = c.partition("=")
        if not sep or not field.strip() or not name.strip():
            raise ValueError(f"--col expects FIELD=COLUMN (e.g. image=file_pointer), got {c!r}")
        out[field.strip()] = name.strip()
    return out


@user_errors
def clicks_command(
    table: Path = typer.Argument(..., help="Click table (.csv, .tsv or .parquet), one row per trial."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images named in the table."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset directory (harmonia format)."),
    split: str = typer.Option("test", help="Split to write."),
    name: Optional[str] = typer.Option(None, help="Dataset name.", show_default="the table's file name"),
    min_catch: str = typer.Option("0.95", help="Keep trials with catch-trial accuracy >= this; 'none' to skip."),
    keep_mobile: bool = typer.Option(False, "--keep-mobile", help="Keep trials played on a phone."),
    keep_duplicates: bool = typer.Option(False, "--keep-duplicates", help="Keep repeated (user, image) trials."),
    min_clicks: int = typer.Option(10, min=0, help="Drop trials with this many clicks or fewer."),
    max_clicks: int = typer.Option(75, min=0, help="Keep a trial's first N clicks (0: all)."),
    min_subjects: int = typer.Option(5, min=1, help="Drop images with fewer valid trials."),
    blur: str = typer.Option("disk", help="'disk' (flat disk, applied twice), 'gaussian' or 'none'."),
    blur_size: Optional[int] = typer.Option(None, min=1, help="Kernel size in px.", show_default="21 at 256, scaled with the short side; Gaussian 22"),
    sigma: Optional[float] = typer.Option(None, help="Gaussian sigma.", show_default="sqrt(size)"),
    resize: int = typer.Option(256, min=0, help="Resize the short side to this (0: native size)."),
    crop: int = typer.Option(224, min=0, help="Centre-crop size (0: no crop)."),
    no_subjects: bool = typer.Option(False, "--no-subjects", help="Do not store per-subject maps (no ceilings then)."),
    col: list[str] = typer.Option([], "--col", help="Column mapping FIELD=NAME (fields: image, user, x, y, catch, mobile, label). Repeatable.", show_default="none (the standard column names)"),
    device: str = typer.Option("cpu", help="Where to blur: 'cpu', 'cuda', ..."),
) -> None:
    from harmonia.humans.clicks import ClickFilter, clicks_to_dataset, load_click_table
    from harmonia.utils.device import resolve_device

    resolve_device(device)  # before the (possibly large) table is read
    if min_catch.strip().lower() in ("none", "off", ""):
        catch = None
    else:
        try:
            catch = float(min_catch)
        except ValueError:
            raise ValueError(f"--min-catch must be a number or 'none', got {min_catch!r}") from None
    filt = ClickFilter(
        min_catch_accuracy=catch, drop_mobile=not keep_mobile, drop_duplicates=not keep_duplicates,
        min_clicks=min_clicks, max_clicks=max_clicks or None, min_subjects=min_subjects,
    )
    columns = _parse_columns(col)
    console.print(f"reading {table} ...")
    tab = load_click_table(table, columns)
    with progress_callback("writing images") as update:
        report = clicks_to_dataset(
            tab, images, out, split=split, name=name, filter=filt, blur=blur, blur_size=blur_size, sigma=sigma,
            resize=resize or None, crop=crop or None, keep_subjects=not no_subjects, device=device, progress=update,
        )
    for line in report.lines():
        console.print(line, highlight=False)
    console.print(f"wrote {report.images_out} images to {out}/{split}" + ("" if no_subjects else " (with per-subject maps)"))
    if tab.label is None:
        console.print("[yellow]Note:[/] the table has no label column: labels are -1 (unknown); "
                      "evaluate with --targets predicted, or add a label column (--col label=NAME).")


def register(app: typer.Typer) -> None:
    """Add ``harmonia data clicks`` to the ``harmonia data`` group."""
    app.command("clicks", help=reflow(CLICKS_HELP))(clicks_command)
