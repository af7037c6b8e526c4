"""`segdeploy`: export to ONNX, inspect, evaluate, run over folders, benchmark.

Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
unreadable (each named in the output and in summary.json); 1 other failures (for example an
export that fails verification).
"""

from __future__ import annotations

from pathlib import Path

import click

from segdeploy import __version__
from segdeploy.runtime import PROVIDER_CHOICES

EXIT_SOME_INPUTS_FAILED = 3


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segdeploy")
def main() -> None:
    """Ship segtrain models as ONNX and run them with onnxruntime.

    Exit codes: 0 all done; 2 usage or input errors; 3 a batch finished but some inputs were
    unreadable; 1 other failures (for example an export that fails verification).
    """


EXIT_INTERRUPTED = 130


@main.command("batch")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; mirrors INPUT_DIR's tree.")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX model from `segdeploy export` [default: the only .onnx in exported/].")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Images per onnxruntime call.")
@click.option("--provider", default="auto", show_default=True, type=click.Choice(PROVIDER_CHOICES),
              help="auto takes TensorRT or CUDA when onnxruntime has them, else CPU.")
@click.option("--threads", type=click.IntRange(min=1), help="onnxruntime intra-op threads [default: onnxruntime's].")
@click.option("--workers", type=click.IntRange(min=1), help="Decode threads and write threads [default: cores, max 4].")
@click.option("--alpha", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Opacity of the colour mask in the overlay.")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs already exist.")
@click.option("--gt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO labels.json: score the masks against it (file names relative to INPUT_DIR).")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
def batch_command(input_dir: Path, out_dir: Path, model: Path | None, batch_size: int, provider: str,
                  threads: int | None, workers: int | None, alpha: float, overwrite: bool, gt: Path | None,
                  progress: bool | None) -> None:
    """Segment every image under INPUT_DIR (recursively) with an ONNX model.

    \b
    For INPUT_DIR/sub/a.jpg it writes, at the image's size after EXIF orientation:
      OUT/sub/a.jpg.mask.png     class mask: indexed PNG, pixel value = class index
      OUT/sub/a.jpg.color.png    colour mask in the model's palette
      OUT/sub/a.jpg.overlay.jpg  colour mask blended over the photo (--alpha)
    and OUT/summary.json (model, provider, per-image size, seconds and class shares,
    failures, totals, images/s).

    Unreadable files are skipped and named with the reason. A rerun of the same command skips
    images whose outputs are complete (--overwrite redoes them), so an interrupted run
    (Ctrl-C, kill) is finished by running it again.

    \b
    Exit codes: 0 all images done; 2 usage or input errors (bad folder, model or labels.json);
    3 finished, but some inputs were unreadable; 1 other failures; 130 interrupted.
    """
    import segdeploy.batch as batching
    from segdeploy.runtime import ModelLoadError
    from segtrain.coco import DataError

    try:
        config = batching.BatchConfig(input_dir=input_dir, out_dir=out_dir, model=model or batching.default_model(),
                                      batch_size=batch_size, provider=provider, threads=threads,
                                      workers=workers or batching.default_workers(), alpha=alpha,
                                      overwrite=overwrite, gt=gt, progress=progress)
        with batching.sigterm_as_interrupt():
            result = batching.run_batch(config)
    except (batching.BatchInputError, ModelLoadError, DataError) as e:
        raise click.UsageError(str(e)) from e
    except batching.BatchRunError as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        click.echo("interrupted: finished outputs are kept; run the same command again to do the rest", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    click.echo(result.describe())
    if result.failures:
        click.echo(result.describe_failures(), err=True)
        raise SystemExit(EXIT_SOME_INPUTS_FAILED)


if __name__ == "__main__":
    main()
