"""`segdeploy`: export to ONNX, inspect, evaluate, run over folders, benchmark.

Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
unreadable (each named in the output and in summary.json); 1 other failures (for example an
export that fails verification).
"""

from __future__ import annotations

import click

from segdeploy import __version__

EXIT_SOME_INPUTS_FAILED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segdeploy")
def main() -> None:
    """Ship segtrain models as ONNX and run them with onnxruntime.

    Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
    unreadable; 1 other failures (for example an export that fails verification).
    """


if __name__ == "__main__":
    main()
