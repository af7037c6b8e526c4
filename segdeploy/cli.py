"""`segdeploy`: export to ONNX, inspect, evaluate, run over folders, benchmark.

Every command is a thin shell over a library function in one of the three wings (infer, export,
bench); option defaults come from their config dataclasses, errors derive from segtrain.common.errors
and are reported once, by the group (exit codes: segtrain.common.errors.EXIT_CODES).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from segdeploy import __version__
from segdeploy.bench.config import BenchConfig
from segdeploy.export.config import ExportConfig
from segdeploy.infer.batch.config import (
    ENGINES,
    MAX_MEMORY_BUDGET_MB,
    MEMORY_SHARE,
    MIN_MEMORY_BUDGET_MB,
    BatchConfig,
)
from segdeploy.infer.batch.decode import BYTES_PER_PIXEL, image_bytes
from segdeploy.infer.batch.outputs import DEFAULT_SAVE, SAVE_CHOICES
from segdeploy.infer.evaluate import ModelEvaluateConfig
from segdeploy.infer.model_file import DEFAULT_MODEL_DIR, PRECISIONS, VARIANTS
from segdeploy.infer.pipeline import MAX_DEFAULT_WORKERS
from segdeploy.infer.runtime import PROVIDER_CHOICES, RUNTIME_CHOICES
from segdeploy.infer.tiling import MAX_TILE_OVERLAP
from segtrain.common.commandline import (
    FiniteFloat,
    NameList,
    ToolGroup,
    exit_codes_epilog,
    option_type,
    setting_option,
)
from segtrain.common.errors import (
    EXIT_FAILURE,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_INPUTS_FAILED,
    printable,
)
from segtrain.common.settings import COMMAND_LINE, build, default

if TYPE_CHECKING:
    from segdeploy.infer.batch.shards import Shard

TTA_HELP = ("Test-time augmentation: flip = the mean of the logits of each photo and of its mirror image (the "
            "model runs twice), as `segtrain evaluate --tta flip` does it.")
EXIT_CODES_HELP = exit_codes_epilog((EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_SOME_INPUTS_FAILED, EXIT_INTERRUPTED))

bench_option = functools.partial(setting_option, BenchConfig)
export_option = functools.partial(setting_option, ExportConfig)
evaluate_option = functools.partial(setting_option, ModelEvaluateConfig)
TILE_HELP = ("auto: as the model was trained (each photo stretched into one input, for a model trained on whole "
             "photos, as segtrain's are; windows at the photo's own scale for one trained on crops); N: windows of "
             "N photo pixels, each resized to the input, one model call per window (fine detail of large photos, "
             "slower); off: stretch every photo into one input.")
TILE_OVERLAP_HELP = (f"Fraction of a window's side shared with its neighbours (0 to {MAX_TILE_OVERLAP:g}); their "
                     "logits are blended before the arg-max.")
RUNTIME_HELP = ("Inference engine: auto, on the CPU with OpenVINO installed (the 'openvino' extra), times both "
                "engines on this model, batch size and threads for a few seconds and takes the faster, remembered "
                "in ~/.cache/segtrain (SEGTRAIN_CACHE_DIR) so later runs measure nothing; with a GPU provider, or "
                "without OpenVINO, onnxruntime. --threads and --batch-size apply to either (OpenVINO: "
                "INFERENCE_NUM_THREADS); --provider is onnxruntime's.")


# Habits from Ultralytics (`yolo predict source=... device=...`) and MMSegmentation, and what to type here instead.
_PREDICT = "`segdeploy batch SOURCE... --out DIR` segments images, folders, globs and videos"
HINTS = {"predict": _PREDICT, "segment": _PREDICT, "infer": _PREDICT, "inference": _PREDICT,
         "val": "`segdeploy evaluate MODEL.onnx --data DIR` scores a model on a dataset split",
         "--source": "SOURCE is an argument, not an option: `segdeploy batch SOURCE... --out DIR`",
         "--device": "--provider auto|cpu|cuda|tensorrt chooses where the model runs (auto takes a GPU when "
                     "onnxruntime has one)",
         "--weights": "--model MODEL.onnx names the model", "--save-dir": "--out DIR names the output folder",
         "--project": "--out DIR names the output folder",
         "--imgsz": "the input size is the model's own (`segdeploy info MODEL.onnx`); --tile N runs large photos as "
                    "windows of N pixels"}


@click.group(cls=ToolGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP,
             hints=HINTS)
@click.version_option(__version__, prog_name="segdeploy")
def main() -> None:
    """Ship segtrain models as ONNX and run them with onnxruntime or OpenVINO."""


def _shard_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    from segdeploy.infer.batch.shards import ShardError, parse_shard

    try:
        return parse_shard(value)
    except ShardError as e:
        raise click.BadParameter(str(e), ctx, param) from e


def _tile_option(ctx: click.Context, param: click.Parameter, value: str) -> str | int:
    from segdeploy.infer.tiling import TileError, parse_tile

    try:
        return parse_tile(value)
    except TileError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], ctx, param) from e


def _overlap_option(ctx: click.Context, param: click.Parameter, value: float) -> float:
    from segdeploy.infer.tiling import TileError, check_overlap

    try:
        return check_overlap(value)
    except TileError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], ctx, param) from e


@main.command("batch", epilog=EXIT_CODES_HELP)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder or object-store URL (s3://bucket/preds/); mirrors the tree of each folder given "
                   "(files given directly land at its top).")
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help=f"ONNX model from `segdeploy export` [default: the FP32 model in {DEFAULT_MODEL_DIR}/, when there "
                   f"is one (its {'/'.join(f'.{v}' for v in VARIANTS)} variants may sit beside it)].")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help=f"Run this variant of the model ({', '.join(f'<name>.{v}.onnx' for v in VARIANTS)}) [default: the "
                   f"model as named, or {PRECISIONS[0].upper()}].")
@setting_option(BatchConfig, "--batch-size", help="Images (or tiles of a large image) per model call.")
@click.option("--provider", default=default(BatchConfig, "provider"), show_default=True,
              type=click.Choice(PROVIDER_CHOICES),
              help="auto takes TensorRT or CUDA when onnxruntime has them, else CPU.")
@click.option("--runtime", default=default(BatchConfig, "runtime"), show_default=True,
              type=click.Choice(RUNTIME_CHOICES), help=RUNTIME_HELP)
@setting_option(BatchConfig, "--threads", help="Intra-op threads of the runtime [default: its own].")
@setting_option(BatchConfig, "--workers", default=None,
                help=f"Decode threads and write threads [default: cores, max {MAX_DEFAULT_WORKERS}].")
@click.option("--save", default=",".join(default(BatchConfig, "save")), show_default=True,
              type=NameList(SAVE_CHOICES),
              help="Outputs per image: mask (class mask, shown in the palette), overlay, color (RGB colour mask), "
                   "confidence (255 x the winning class's probability, shown in a colour map); rle: "
                   "OUT/predictions.json in the COCO results format; frames: a video's outputs as per-frame files "
                   "instead of videos. The mask is always written (a rerun resumes from it).")
@click.option("--legend", is_flag=True, help="Draw a legend of the classes present onto each overlay.")
@click.option("--tile", default=str(default(BatchConfig, "tile")), show_default=True, metavar="auto|off|N",
              callback=_tile_option, help=TILE_HELP)
@click.option("--tile-overlap", default=default(BatchConfig, "tile_overlap"), show_default=True,
              type=option_type(BatchConfig, "tile_overlap"), callback=_overlap_option, help=TILE_OVERLAP_HELP)
@click.option("--tta", default=default(BatchConfig, "tta"), show_default=True, type=option_type(BatchConfig, "tta"),
              help=TTA_HELP)
@click.option("--alpha", default=default(BatchConfig, "alpha"), show_default=True, type=FiniteFloat(0.0, 1.0),
              help="Opacity of the colour mask in the overlay.")
@click.option("--memory-budget", type=click.IntRange(1, MAX_MEMORY_BUDGET_MB), metavar="MB",
              help="Memory the images in flight may hold, counted from each image's header before it is decoded "
                   f"(about {image_bytes(DEFAULT_SAVE) + BYTES_PER_PIXEL['photo']} bytes per pixel with the default "
                   "outputs); a larger image waits for the others, one larger than the budget runs alone [default: "
                   f"1/{MEMORY_SHARE} of the available memory, at least {MIN_MEMORY_BUDGET_MB}].")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs already exist.")
@click.option("--gt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="COCO labels.json: score the masks against it (file names relative to the folder given); "
                   "predictions.json takes its image ids.")
@click.option("--image-ids", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="LABELS.json",
              help="A COCO file (its \"images\" only) whose image ids predictions.json takes, matched by file name "
                   "relative to the folder given, so pycocotools' COCO.loadRes takes it [default: --gt's].")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: when stderr is a terminal].")
@click.option("--engine", default=default(BatchConfig, "engine"), show_default=True, type=click.Choice(ENGINES),
              help="Who segments the images: this process, or Ray Data actors (one model per actor, on this "
                   "machine or a Ray cluster; needs the 'ray' extra). Videos run in this process either way.")
@click.option("--ray-address", metavar="ADDR",
              help="With --engine ray: the Ray cluster (auto, HOST:6379 on a cluster node, or ray://host:10001, which "
                   "needs pip install 'ray[client]') [default: RAY_ADDRESS, a running instance, or a new one on this "
                   "machine]; one that does not answer is refused at once (exit 2).")
@setting_option(BatchConfig, "--actors",
              help="With --engine ray: model replicas (actors), each with --threads CPUs [default: as many as the "
                   "cluster's CPUs hold].")
@click.option("--shard", metavar="K/N", callback=_shard_option,
              help="Do only share K (0..N-1) of N of the inputs; 'auto' reads a SLURM job array's "
                   "SLURM_ARRAY_TASK_ID/COUNT, 'auto/N' a Kubernetes Indexed Job's JOB_COMPLETION_INDEX.")
def batch_command(model: Path | None, precision: str | None, **options) -> None:
    """Segment the images and videos SOURCE names: folders (recursively), image or video files,
    quoted glob patterns ('photos/**/*.jpg'), video URLs (rtsp://..., http(s)://.../clip.mp4), a
    camera index (0), or object-store prefixes (s3://bucket/photos/, gs://, az://: the cloud
    extra; --out may be one too).

    \b
    By default (--save mask,overlay) it writes two files per image, at the image's size after
    EXIF orientation; for SOURCE/sub/a.jpg:
      OUT/sub/a.jpg.mask.png     class mask: indexed PNG, pixel value = class index, shown in
                                 the model's palette (it is the colour mask too)
      OUT/sub/a.jpg.overlay.jpg  colour mask blended over the photo (--alpha, --legend)
    --save adds a.jpg.color.png (RGB colour mask), a.jpg.confidence.png (255 x the winning
    class's probability) and OUT/predictions.json (rle: COCO results, one entry per image and
    class). Every output folder gets legend.png (swatch, index, name and COCO id of each class),
    and OUT gets summary.json (model, provider, per-image size, seconds and class shares,
    failures, totals, images/s).

    \b
    A video SOURCE/clip.mp4 gives, at its size and frame rate:
      OUT/clip.mp4.mask.mkv      the colour mask, lossless (FFV1)
      OUT/clip.mp4.overlay.mp4   the overlay
    (--save confidence adds clip.mp4.confidence.mkv; --save frames writes each frame's image
    outputs into OUT/clip.mp4.frames/ instead), then OUT/clip.mp4.record.json. A stream or
    camera runs until it ends or Ctrl-C, which keeps what was recorded.

    An OUT that holds the outputs of another model or other output settings is refused (use a
    new --out, or --overwrite to replace them); summary.json lists every image in OUT.

    Only regular image files are inputs: unreadable files, FIFOs, dangling symlinks and folders
    that cannot be listed are skipped and named with the reason. --out is checked to be
    writable first; when it fills up (or turns read-only) the run stops with an error, keeps what
    was finished and lists it in summary.json. A rerun of the same command skips images whose outputs
    are complete (--overwrite redoes them), so an interrupted or stopped run (Ctrl-C, kill, a full
    disk) is finished by running it again.

    With --shard K/N, N runs (on N machines) share the inputs, each file by a hash of its path
    relative to the folder given, and may write into the same OUT; each writes
    OUT/summary.shard-K-of-N.json, and `segdeploy merge-summary OUT` combines them.
    """
    from segdeploy.infer.batch.run import run_batch, sigterm_as_interrupt

    config = BatchConfig(model=_chosen_model(model, precision), **{k: v for k, v in options.items() if v is not None})
    try:
        with sigterm_as_interrupt():
            result = run_batch(config)
    except KeyboardInterrupt:
        click.echo("interrupted: finished outputs are kept; run the same command again to do the rest", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    click.echo(result.describe())
    if result.failures:
        click.echo(result.describe_failures(), err=True)
        raise SystemExit(EXIT_SOME_INPUTS_FAILED)


def _chosen_model(model: Path | None, precision: str | None) -> Path:
    """The model to run; says on stderr which one when it was picked rather than named."""
    from segdeploy.infer.model_file import choose_model

    path, note = choose_model(model, precision)
    if note:
        click.echo(note, err=True)
    return path


@main.command("score", epilog=exit_codes_epilog((EXIT_OK, EXIT_INPUT)))
@click.argument("predictions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--gt", "labels", required=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="LABELS.json", help="COCO labels.json whose images PREDICTIONS are of.")
@click.option("--categories", metavar="NAME|ID,...",
              help="The model's classes besides background, by name or COCO id [default: those of the model in the "
                   "summary.json beside PREDICTIONS].")
@click.option("--json", "as_json", is_flag=True, help="Print the scores (and the confusion matrix) as JSON.")
def score_command(predictions: Path, labels: Path, categories: str | None, as_json: bool) -> None:
    """Score COCO results of one region per class and image (`segdeploy batch --save rle`'s
    predictions.json) against labels.json as COCO-Stuff scores semantic segmentation: IoU per
    class, mIoU, frequency-weighted IoU, mean accuracy and pixel accuracy, from one confusion
    matrix (the same one `segdeploy batch --gt` builds on the same run).

    Pixels no result covers count as background. COCOeval's instance AP is the wrong measure for
    semantic masks (each class is one region); this is the right one.
    """
    import json

    from segdeploy.infer.score import score_results

    chosen = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
    scores = score_results(predictions, labels, chosen)
    click.echo(json.dumps(scores.to_dict(), indent=2) if as_json else f"{predictions} against {labels}:\n"
               f"{scores.table()}")


@main.command("bench")
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@bench_option("--image-size", "image_sizes",
              help="Square input size(s), e.g. 512 or 256,512 [default: each model's own].")
@bench_option("--batch-sizes", help="Batch sizes to time.")
@bench_option("--runs", help="Timed runs per batch size and image size.")
@bench_option("--warmup", help="Warm-up runs before timing (the first one is reported as the first-run time).")
@bench_option("--threads", default=None,
              help="Threads for every backend (torch.set_num_threads, ORT intra-op) [default: usable cores].")
@bench_option("--backends", help="Backends to time; ort-fp16 runs only with a GPU provider, ov-* only where "
                                 "OpenVINO is installed.")
@bench_option("--provider", help="onnxruntime provider (auto: TensorRT or CUDA when available, else CPU).")
@click.option("--onnx-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where checkpoints are exported; files of the same checkpoint are reused [default: temporary].")
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root: INT8 calibration (train), accuracy (validation), sample photos "
                   "[default: the checkpoint's own].")
@bench_option("--calibration-images", help="Images for INT8 calibration.")
@bench_option("--accuracy/--no-accuracy",
              help="Report the INT8 model's mIoU change against FP32 on the validation split.")
@bench_option("--accuracy-images",
              help="Validation images scored [default: all].")
@click.option("--photos", type=click.Path(path_type=Path),
              help="Folder of photos: time `segdeploy batch` on it against the model alone (end-to-end ratio).")
@bench_option("--e2e-batch-size", help="Batch size of the end-to-end run.")
@bench_option("--e2e-workers",
              help="Decode and write threads of the end-to-end run [default: segdeploy batch's].")
@bench_option("--runtime", help="--runtime of the end-to-end `segdeploy batch` runs, one run per value and "
                                "precision, e.g. auto,onnxruntime,openvino (the ov-* backends always time OpenVINO, "
                                "the ort-* ones onnxruntime).")
@bench_option("--graph-optimization", help="onnxruntime graph optimisation level.")
@click.option("--iobinding", is_flag=True, help="Run onnxruntime through an IOBinding.")
@click.option("--channels-last", is_flag=True, help="Run PyTorch eager in channels-last memory format.")
@bench_option("--schedule", help="Time all backends in interleaved rounds, one after the other, or interleaved "
                                 "while memory allows (auto).")
@bench_option("--sgemm-size", help="Side of the float32 matrix product timed as the roofline.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the results here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Latency/throughput plot (PNG) [default: beside --json, same name with .png, where matplotlib "
                   "is installed].")
def bench_command(models: tuple[Path, ...], json_path: Path | None, plot_path: Path | None, **options) -> None:
    """Time MODELs (checkpoints or .onnx) with PyTorch eager, onnxruntime FP32/INT8/FP16 and
    OpenVINO FP32/INT8.

    \b
    For a checkpoint, its ONNX FP32 and INT8 exports (INT8 calibrated on real images from
    --data) are timed beside its eager model in the same process, with the same threads.
    For an .onnx file, it and its .int8.onnx/.fp16.onnx siblings are timed (no PyTorch
    needed). With no MODEL: every runs/*/best_model.pth, else every exported/*.onnx.

    \b
    Reports, per backend: session-creation time, peak RSS; per image size and batch size:
    first-run time, latency p50/p90/p99/mean over --runs timed runs, images/s (batch over the
    median latency), achieved GFLOP/s against an SGEMM timed in the same run; then speed
    ratios, the INT8 mIoU change on the validation split (INT8 run by onnxruntime and by
    OpenVINO), and (with --photos) the end-to-end `segdeploy batch --runtime` images/s with
    the FP32 and INT8 models against the model alone.
    """
    from segdeploy.bench.run import bench_and_write

    values = {"models": list(models), **{k: v for k, v in options.items() if v is not None}}
    bench_and_write(build(BenchConfig, [(COMMAND_LINE, values)]), json_path, plot_path, echo=click.echo,
                    log=lambda m: click.echo(m, err=True))


class _FolderOrURL(click.Path):
    """An existing folder, or an object-store URL (s3://bucket/preds/), taken as it is."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        from segdeploy.infer.storage import is_store_url

        return value if isinstance(value, str) and is_store_url(value) else super().convert(value, param, ctx)


@main.command("merge-summary", epilog=exit_codes_epilog((EXIT_OK, EXIT_INPUT, EXIT_SOME_INPUTS_FAILED)))
@click.argument("out_dir", type=_FolderOrURL(exists=True, file_okay=False, path_type=Path))
def merge_summary_command(out_dir: Path | str) -> None:
    """Combine the shard summaries of a sharded batch into OUT_DIR/summary.json.

    Checks that OUT_DIR holds summary.shard-K-of-N.json for every K = 0..N-1, that the shards ran
    the same model, classes and overlay alpha over the same input files, and that no image is
    listed twice. summary.json then lists every image and failure, totals summed over the shards,
    images/s as the images over the wall span from the first shard's start to the last one's end
    (the sum of the shards' own rates is recorded too), and with --gt the IoU of the shards'
    summed confusion matrices. A shard summary that is missing, unreadable or disagrees is named.
    """
    from segdeploy.infer.batch.merge import merge_shard_summaries

    result = merge_shard_summaries(out_dir)
    click.echo(result.describe())
    if result.failures:
        click.echo(result.describe_failures(), err=True)
        raise SystemExit(EXIT_SOME_INPUTS_FAILED)


@main.command("export", epilog=exit_codes_epilog((EXIT_OK, EXIT_FAILURE, EXIT_INPUT)))
@click.argument("checkpoints", nargs=-1, type=click.Path(path_type=Path))
@export_option("--out", type=click.Path(path_type=Path),
               help="Folder for <name>.onnx, its variants and .verify.json reports.")
@export_option("--opset", help="ONNX opset to target.")
@export_option("--verify/--no-verify", help="Compare onnxruntime with PyTorch on real validation images before "
                                            "writing the model.")
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root for verification and calibration [default: the one the model was trained on].")
@export_option("--split", help="Split whose images verify the export.")
@export_option("--verify-images", help="Validation images to verify on.")
@export_option("--verify-batch-size", help="Batch size for verification (trace uses 1).")
@export_option("--max-diff", help="Largest allowed |logit difference|.")
@export_option("--min-agreement", help="Smallest allowed arg-max agreement, in %.")
@export_option("--int8", is_flag=True, help="Also write <name>.int8.onnx (static QDQ INT8) and its report.")
@export_option("--calibration-images", help="Training images to calibrate INT8 on.")
@export_option("--int8-max-drop", help="INT8 gate: largest allowed mIoU drop against FP32, in points.")
@export_option("--int8-min-agreement", help="INT8 gate: smallest allowed arg-max agreement with FP32, in %.")
@export_option("--int8-images", help="Validation images INT8 is compared with FP32 on.")
@export_option("--fp16", is_flag=True, help="Also write <name>.fp16.onnx (float32 input/output) and its report.")
@export_option("--overwrite", is_flag=True,
               help="Replace .onnx files exported from another checkpoint, and export up-to-date ones again.")
def export_command(checkpoints: tuple[Path, ...], **options) -> None:
    """Export checkpoints to self-describing ONNX, verified against PyTorch.

    With no CHECKPOINT, every runs/*/best_model.pth becomes <out>/<run name>.onnx. A model that
    fails verification is not written; a checkpoint that cannot be exported is named and the
    others are still exported.

    With --int8, the INT8 model is compared with FP32 on the validation images (--int8-images of
    them) and written only when arg-max agreement >= --int8-min-agreement and the mIoU drop <=
    --int8-max-drop; otherwise its report is kept as <name>.int8.failed.verify.json and the
    export fails (the FP32 model is written). With --no-verify nothing is compared and the
    gate is not applied.

    An existing <name>.onnx is never replaced by accident: when its provenance names the same
    checkpoint (sha256) it is up to date and kept; when it comes from another checkpoint the
    export stops unless --overwrite.
    """
    from segdeploy.export.exporter import export_checkpoints

    config = build(ExportConfig, [(COMMAND_LINE, {"checkpoints": list(checkpoints), **options})])
    failed = export_checkpoints(config, echo=click.echo, error=lambda e: click.echo(f"Error: {printable(e)}", err=True))
    if failed:
        raise SystemExit(max(e.exit_code for e in failed))


@main.command("info")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def info_command(model: Path, as_json: bool) -> None:
    """Print an exported model's spec (classes, palette, mean/std, input size), provenance, inputs/outputs, opset."""
    import json

    from segdeploy.infer.info import describe, format_info

    info = describe(model)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@main.command("evaluate")
@click.argument("model", type=click.Path(path_type=Path))
@evaluate_option("--data", type=click.Path(path_type=Path), help="Dataset root.")
@evaluate_option("--split", help="validation, test or train.")
@evaluate_option("--batch-size")
@evaluate_option("--runtime", help=RUNTIME_HELP)
@evaluate_option("--provider", help="onnxruntime execution provider.")
@evaluate_option("--threads", help="Intra-op threads of the runtime [default: its own].")
@evaluate_option("--tile", metavar="auto|off|N", callback=_tile_option, help=TILE_HELP)
@evaluate_option("--tile-overlap", type=option_type(ModelEvaluateConfig, "tile_overlap"), callback=_overlap_option,
                 help=TILE_OVERLAP_HELP)
@evaluate_option("--tta", help=TTA_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_command(model: Path, as_json: bool, **options) -> None:
    """Per-class IoU, mIoU and pixel accuracy of an ONNX model on a split (no PyTorch needed).

    Same scoring and table as `segtrain evaluate`: each image at its original size. The model
    runs as `segdeploy batch` runs it, with the same --tile, so `segdeploy batch --gt` on the
    split's photos scores the same.
    """
    from segdeploy.infer.evaluate import evaluate_onnx

    config = ModelEvaluateConfig(model=model, **{k: v for k, v in options.items() if v is not None})
    result = evaluate_onnx(config, progress=not as_json and sys.stderr.isatty())
    where = f"{result.model.providers[0]}, {result.model.runtime_reason}"
    click.echo(result.metrics.to_json() if as_json else
               f"{model} on {config.split} ({where}):\n{result.metrics.table()}")


if __name__ == "__main__":
    main()
