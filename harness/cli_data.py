"""``harness count IMAGES`` and ``harness datasets [verify]``: counting images and checking downloads; added to the
``harness`` group by :mod:`harness.cli`."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .cli_common import registries as _registries
from .errors import HarnessError


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--counter", "counter_name", required=True, help="Counter name (see `harness plugins`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder for the density-map overlays <image stem>_density.png.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
def count(images, counter_name, out_dir, device):
    """Count people in IMAGES with a counter; print counts and write a density-map overlay per image."""
    from .data.images import read_image
    from .execution import resolve_device

    from .io import check_writable_dir, default_cache_dir

    regs = _registries()
    spec = regs.counters.get(counter_name)
    try:
        counter = spec.factory(device=resolve_device(device))
    except OSError as exc:  # e.g. fetched weights cannot be cached
        raise HarnessError(f"counter {counter_name}: cannot write {exc.filename or default_cache_dir()} "
                           f"({exc.strerror or type(exc).__name__}): set HARNESS_CACHE to a writable folder") from None
    try:
        check_writable_dir(out_dir, "--out")
        writable = True
    except HarnessError as exc:  # the counts are still worth printing
        click.echo(f"Warning: {exc}; printing counts without overlays", err=True)
        writable = False
    from .evaluation import predict_image

    stems: dict[str, int] = {}
    for path in images:
        image = read_image(path)
        pred = predict_image(counter, image, 0, str(path))
        line = f"{path}\t{pred.count:.1f}"
        stem = Path(path).stem
        stems[stem] = stems.get(stem, 0) + 1
        name = stem if stems[stem] == 1 else f"{stem}-{stems[stem]}"  # a/x.jpg and b/x.jpg: two overlays
        if pred.density is not None and writable:
            from .visualize import save_density_overlay

            try:
                line += "\t" + str(save_density_overlay(image, pred.density, pred.count,
                                                        Path(out_dir) / f"{name}_density.png"))
            except OSError as exc:
                click.echo(line)  # the computed count is never lost
                raise HarnessError(f"cannot write the overlay into {out_dir} ({exc.strerror or type(exc).__name__})"
                                   f": choose another --out") from None
        click.echo(line)


# --------------------------------------------------------------------------------------------- datasets


@click.group(invoke_without_command=True)
@click.option("--data-root", type=click.Path(path_type=Path), envvar="HARNESS_DATA", default=None,
              help="Folder holding the datasets' folders; env HARNESS_DATA.")
@click.pass_context
def datasets(ctx, data_root):
    """List registered datasets and the split sizes found (under the data root where one is needed);
    `harness datasets verify [NAME]` checks a download against the official release."""
    ctx.obj = {"data_root": data_root}
    if ctx.invoked_subcommand is not None:
        return
    regs = _registries()
    table = Table(title=f"datasets (data root: {data_root or 'none'})")
    for col in ("dataset", "aliases", "plugin", "train", "val", "test", "status"):
        table.add_column(col, overflow="fold")
    details: list[str] = []
    for entry in regs.datasets:
        spec = entry.spec
        sizes = ["", "", ""]
        if spec.needs_root and data_root is None:
            status = "needs --data-root / HARNESS_DATA"
        else:
            try:
                ds = spec.factory(Path(data_root) if data_root else None)
                sizes = [str(len(ds.samples(s))) for s in ("train", "val", "test")]
                status = "[green]found[/green]"
            except HarnessError as exc:  # short status in the table, the full message (with the fix) below
                status = "[yellow]not found[/yellow]" if "not found" in str(exc) else "[yellow]error[/yellow]"
                details.append(f"{spec.name}: {exc}")
            except Exception as exc:  # a reader bug: report, keep listing
                status = "[red]reader error[/red]"
                details.append(f"{spec.name}: {type(exc).__name__}: {exc}")
        table.add_row(spec.name, ", ".join(spec.aliases), entry.plugin, *sizes, status)
    console = Console()
    console.print(table)
    for line in details:
        console.print(line, markup=False, highlight=False)


@datasets.command("verify")
@click.argument("names", nargs=-1)
@click.pass_context
def datasets_verify(ctx, names):
    """Each split's image count against the official release, every annotation read, missing or extra files listed
    (NAMES: datasets to check; default: every dataset with official sizes found under the data root). Exits 1 when
    anything differs."""
    from .data.verify import OFFICIAL, verify_dataset

    data_root = ctx.obj["data_root"]
    regs = _registries()
    chosen = [regs.datasets.get(n).name for n in names] or [n for n in OFFICIAL if n in regs.datasets]
    if data_root is None and any(regs.datasets.get(n).needs_root for n in chosen):
        raise HarnessError("harness datasets verify needs the data root: pass --data-root (before verify) or set "
                           "HARNESS_DATA")
    bad = 0
    for name in chosen:
        spec = regs.datasets.get(name)
        try:
            ds = spec.factory(Path(data_root) if data_root else None)
        except HarnessError as exc:
            if not names and "not found" in str(exc):
                continue  # not downloaded: only named datasets must be there
            click.echo(f"{name}: {exc}")
            bad += 1
            continue
        v = verify_dataset(name, ds)
        sizes = ", ".join(f"{split} {n}" + ("" if want is None or ok else f" (official {want})")
                          for split, n, want, ok in v.rows)
        click.echo(f"{name}: {'ok' if v.ok else 'DIFFERS'} — {sizes}")
        for line in v.problems[:20]:
            click.echo(f"  {line}")
        if len(v.problems) > 20:
            click.echo(f"  … and {len(v.problems) - 20} more")
        bad += not v.ok
    if bad:
        sys.exit(1)
