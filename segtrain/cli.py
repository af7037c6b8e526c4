"""`segtrain`: dataset reports, training and evaluation.

Exit codes: 0 success; 2 usage or input errors (bad flags, unusable dataset or checkpoint);
1 other failures (for example a non-finite loss).
"""

from __future__ import annotations

import click

from segtrain import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segtrain")
def main() -> None:
    """Train and evaluate semantic-segmentation models on COCO-format data.

    Exit codes: 0 success; 2 usage or input errors; 1 other failures.
    """


if __name__ == "__main__":
    main()
