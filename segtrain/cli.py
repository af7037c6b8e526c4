"""`segtrain`: dataset reports, training and evaluation.

Exit codes: 0 success; 2 usage or input errors (bad flags, unusable dataset or checkpoint);
1 other failures (for example a non-finite loss).
"""

from __future__ import annotations

from pathlib import Path

import click

from segtrain import __version__


class InputError(click.ClickException):
    """Bad input (a file, folder or value): one line "Error: ...", exit code 2."""

    exit_code = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segtrain")
def main() -> None:
    """Train and evaluate semantic-segmentation models on COCO-format data.

    Exit codes: 0 success; 2 usage or input errors; 1 other failures.
    """


def parse_categories(value: str | None) -> list[str] | None:
    """'person,cat,37' -> ['person', 'cat', '37'] (names or COCO ids); None keeps the defaults."""
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


CATEGORIES_HELP = ("Target categories, comma-separated COCO names or ids "
                   "[default: person,cat,sports ball,book = ids 1,17,37,84].")


@main.command("data")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--categories", default=None, help=CATEGORIES_HELP)
def data_command(root: Path, categories: str | None) -> None:
    """Report a dataset: images, instances and pixel share per class, problems.

    ROOT holds split folders (train/, validation/ or val/, test/), each with labels.json and
    data/, or the classic train2017/ + annotations/instances_train2017.json layout. Exits 2
    when a split is unusable.
    """
    from segtrain.coco import DataError
    from segtrain.report import dataset_report

    try:
        reports = dataset_report(root, parse_categories(categories))
    except DataError as e:
        raise InputError(str(e)) from None
    click.echo(f"dataset {root}")
    for rep in reports:
        click.echo("\n".join(rep.lines()))
    bad = [r.name for r in reports if r.error]
    if bad:
        raise InputError(f"unusable split(s): {', '.join(bad)}")


@main.command("sample-data")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed gives the same files.")
def sample_data_command(root: Path, seed: int) -> None:
    """Write the embedded synthetic COCO dataset (train/validation/test) to ROOT."""
    from segtrain.synthetic import make_sample_dataset

    make_sample_dataset(root, seed=seed)
    click.echo(f"wrote a synthetic COCO dataset to {root}")


if __name__ == "__main__":
    main()
