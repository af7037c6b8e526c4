"""`segdeploy`: export to ONNX, inspect, evaluate, run over folders, benchmark.

Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
unreadable (each named in the output and in summary.json); 1 other failures (for example an
export that fails verification).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from segdeploy import __version__

EXIT_SOME_INPUTS_FAILED = 3
EXIT_INPUT_ERROR = 2


class InputError(click.ClickException):
    """Bad input (a file, folder or value): one line "Error: ...", exit code 2."""

    exit_code = EXIT_INPUT_ERROR


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segdeploy")
def main() -> None:
    """Ship segtrain models as ONNX and run them with onnxruntime.

    Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
    unreadable; 1 other failures (for example an export that fails verification).
    """


@main.command("export")
@click.argument("checkpoints", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", default="exported", show_default=True, type=click.Path(path_type=Path),
              help="Folder for <name>.onnx, its variants and .verify.json reports.")
@click.option("--opset", default=20, show_default=True, help="ONNX opset to target.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare onnxruntime with PyTorch on real validation images before writing the model.")
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root for verification and calibration [default: the one the model was trained on].")
@click.option("--split", default="validation", show_default=True, help="Split whose images verify the export.")
@click.option("--verify-images", default=8, show_default=True, help="Validation images to verify on.")
@click.option("--verify-batch-size", default=2, show_default=True, help="Batch size for verification (trace uses 1).")
@click.option("--max-diff", default=1e-4, show_default=True, help="Largest allowed |logit difference|.")
@click.option("--min-agreement", default=99.99, show_default=True, help="Smallest allowed arg-max agreement, in %.")
@click.option("--int8", is_flag=True, help="Also write <name>.int8.onnx (static QDQ INT8) and its report.")
@click.option("--calibration-images", default=32, show_default=True, help="Training images to calibrate INT8 on.")
@click.option("--fp16", is_flag=True, help="Also write <name>.fp16.onnx (float32 input/output) and its report.")
def export_command(checkpoints: tuple[Path, ...], out_dir: Path, opset: int, verify: bool, data: Path | None,
                   split: str, verify_images: int, verify_batch_size: int, max_diff: float, min_agreement: float,
                   int8: bool, calibration_images: int, fp16: bool) -> None:
    """Export checkpoints to self-describing ONNX, verified against PyTorch.

    With no CHECKPOINT, every runs/*/best_model.pth becomes <out>/<run name>.onnx. A model that
    fails verification is not written (exit 1); bad checkpoints, data or output folder exit 2.
    The other checkpoints are still exported.
    """
    from segdeploy.export import ExportOptions, find_checkpoints, output_name
    from segdeploy.verify import Thresholds

    paths = list(checkpoints) or find_checkpoints()
    if not paths:
        raise InputError("no CHECKPOINT given and no runs/*/best_model.pth found")
    names = [output_name(p) for p in paths]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise InputError(f"several checkpoints would be exported as {', '.join(clashes)}.onnx; export them separately")
    opts = ExportOptions(out_dir=out_dir, opset=opset, verify=verify, data=data, split=split,
                         verify_images=verify_images, verify_batch_size=verify_batch_size,
                         thresholds=Thresholds(max_diff, min_agreement / 100), int8=int8,
                         calibration_images=calibration_images, fp16=fp16)
    codes = [_export_one(p, opts) for p in paths]
    if any(codes):
        sys.exit(max(codes))


def _export_one(path: Path, opts) -> int:
    """Export one checkpoint; an error is printed in one line and becomes the exit code."""
    from segdeploy.export import ExportError, VerificationError, export_checkpoint
    from segtrain.checkpoint import CheckpointError
    from segtrain.images import ImageReadError

    try:
        export_checkpoint(path, opts, echo=click.echo)
    except (CheckpointError, ExportError, ImageReadError) as e:
        click.echo(f"Error: {e}", err=True)
        return EXIT_INPUT_ERROR
    except VerificationError as e:
        click.echo(f"Error: {e}", err=True)
        return 1
    return 0


@main.command("info")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info_command(model: Path, as_json: bool) -> None:
    """Print an exported model's spec (classes, palette, mean/std, input size), provenance, inputs/outputs, opset."""
    import json

    from segdeploy.info import describe, format_info
    from segdeploy.runtime import ModelLoadError

    try:
        info = describe(model)
    except ModelLoadError as e:
        raise InputError(str(e)) from None
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@main.command("evaluate")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", default="data", show_default=True, type=click.Path(path_type=Path), help="Dataset root.")
@click.option("--split", default="test", show_default=True, help="test, validation or train.")
@click.option("--batch-size", default=4, show_default=True)
@click.option("--provider", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), help="onnxruntime execution provider.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: all cores].")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_command(model: Path, data: Path, split: str, batch_size: int, provider: str, threads: int | None,
                     as_json: bool) -> None:
    """Per-class IoU, mIoU and pixel accuracy of an ONNX model on a split (no PyTorch needed).

    Same scoring and table as `segtrain evaluate`: each image at its original size.
    """
    from segdeploy.evaluate import evaluate_onnx
    from segdeploy.runtime import ModelLoadError
    from segtrain.coco import DataError
    from segtrain.images import ImageReadError

    try:
        metrics, _ = evaluate_onnx(model, data, split, batch_size=batch_size, provider=provider, threads=threads,
                                   progress=not as_json and sys.stderr.isatty())
    except (ModelLoadError, DataError, ImageReadError) as e:
        raise InputError(str(e)) from None
    click.echo(metrics.to_json() if as_json else f"{model} on {split}:\n{metrics.table()}")


if __name__ == "__main__":
    main()
