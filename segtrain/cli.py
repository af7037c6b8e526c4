"""`segtrain`: dataset reports, training and evaluation.

Every command is a thin shell over a library function; errors derive from segtrain.common.errors and are
reported once, by the group (exit codes: segtrain.common.errors.EXIT_CODES).
"""

from __future__ import annotations

from pathlib import Path

import click

from segtrain import __version__
from segtrain.common.commandline import ToolGroup, exit_codes_epilog, setting_option
from segtrain.common.errors import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, InputError
from segtrain.training.config import (
    ARCHITECTURES,
    AUGMENTS,
    DEFAULT_LOSS,
    DEFAULT_LR,
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZERS,
    PROGRESS_MODES,
    CheckpointEvaluateConfig,
)
from segtrain.training.runs import (
    BEST_MODEL,
    CONFIG_JSON,
    CONFUSION_PNG,
    LAST,
    LOSS_PNG,
    METRICS_CSV,
    MIOU_PNG,
    RUNS_DIR,
    SAMPLES_PNG,
)

EXIT_CODES_HELP = exit_codes_epilog((EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED))


@click.group(cls=ToolGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="segtrain")
def main() -> None:
    """Train and evaluate semantic-segmentation models on COCO-format data."""


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
    data/, or the classic train2017/ + annotations/instances_train2017.json layout. An unusable
    split is an input error.
    """
    from segtrain.data.dataset_report import dataset_report

    reports = dataset_report(root, parse_categories(categories))
    click.echo(f"dataset {root}")
    for rep in reports:
        click.echo("\n".join(rep.lines()))
    bad = [r.name for r in reports if r.error]
    if bad:
        raise InputError(f"unusable split(s): {', '.join(bad)}")


@main.command("sample-data")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives the same files.")
def sample_data_command(root: Path, seed: int) -> None:
    """Write the embedded synthetic COCO dataset (train/validation/test) to ROOT."""
    from segtrain.data.synthetic import make_sample_dataset

    make_sample_dataset(root, seed=seed)
    click.echo(f"wrote a synthetic COCO dataset to {root}")


def _default(name: str) -> str:
    """"[default: X]" for a fit option, read from TrainConfig (the one place defaults live)."""
    from segtrain.common.settings import default
    from segtrain.training.config import TrainConfig

    return f"[default: {default(TrainConfig, name)}]"


# Fit options pass raw text to segtrain.training.config, which converts and checks flags and --config values
# alike; metavars stand in for click's types.
def _pair(a: str, b: str, what: str) -> str:
    return f"  {a + ', ' + b:<29}{what}"


FIT_HELP = "\n".join([
    "Train MODEL on a COCO dataset: " + ", ".join(ARCHITECTURES) + ".", "", "\b",
    f"Writes to {RUNS_DIR}/<model>/ (or the next free {RUNS_DIR}/<model>-N/, or --out), after every epoch:",
    _pair(BEST_MODEL, LAST, "best validation mIoU; latest, for --resume"),
    _pair(METRICS_CSV, CONFIG_JSON, "per-epoch metrics; the resolved settings"),
    _pair(LOSS_PNG, MIOU_PNG, "curves, the best epoch marked"),
    _pair(CONFUSION_PNG, SAMPLES_PNG, "the best epoch's confusion matrix and predictions"),
    "Validation mIoU is measured at the input size after every epoch. Under torchrun the same",
    "command trains with DistributedDataParallel."])


@main.command("fit", help=FIT_HELP)
@click.argument("model", metavar="|".join(ARCHITECTURES))
@click.option("--data", metavar="DIR", help=f"Dataset root with train/ and validation/ {_default('data')}.")
@click.option("--out", metavar="DIR",
              help="Output folder [default: runs/<model>, or the next free runs/<model>-N]; one that holds a "
                   "run is refused without --exist-ok or --resume.")
@click.option("--exist-ok", is_flag=True, help="Write into --out (or runs/<model>) even if it holds a run, "
                                               "replacing its files.")
@click.option("--epochs", metavar="N", help=f"Epochs to train (with --resume: the new total) {_default('epochs')}.")
@click.option("--batch-size", metavar="N",
              help=f"Images per batch (per process under torchrun) {_default('batch_size')}.")
@click.option("--optimizer", metavar="[" + "|".join(OPTIMIZERS) + "]",
              help=f"Adam, AdamW (decoupled weight decay) or SGD with momentum 0.9 {_default('optimizer')}.")
@click.option("--nesterov", is_flag=True, default=None, help="Nesterov momentum (with --optimizer sgd).")
@click.option("--lr", metavar="X", help="Base learning rate (0 allowed) [default: "
                                        + ", ".join(f"{v:g} for {k}" for k, v in DEFAULT_LR.items()) + "].")
@click.option("--weight-decay", metavar="X",
              help=f"Weight decay (L2 for adam and sgd, decoupled for adamw) {_default('weight_decay')}.")
@click.option("--lr-schedule", metavar="[" + "|".join(LR_SCHEDULES) + "]",
              help=f"Learning-rate decay over the run, per step {_default('lr_schedule')}.")
@click.option("--warmup-epochs", metavar="N",
              help=f"Epochs of linear learning-rate warm-up before the schedule {_default('warmup_epochs')}.")
@click.option("--patience", metavar="N",
              help=f"Stop early when validation mIoU has not improved for N epochs ({BEST_MODEL} stays the best) "
                   "[default: off].")
@click.option("--image-size", metavar="N", help=f"Square input size, a multiple of 32 {_default('image_size')}.")
@click.option("--augment", metavar="[" + "|".join(AUGMENTS) + "]",
              help="Training augmentation: basic = the photo stretched to the input size, flip, brightness/contrast, "
                   "rotation, noise; scale-crop = resized 0.5-2.0x, padded (ignored) and cropped to the input size, "
                   f"flip, colour jitter. Validation is never augmented {_default('augment')}.")
@click.option("--encoder", help="Encoder: any smp encoder, or vgg16_bn/vgg16 for segnet [default: resnet50 for deeplab "
                                 "and deeplabv3plus, resnet34 for unet and fpn, mit_b0 for segformer, vgg16_bn for "
                                 "segnet].")
@click.option("--encoder-weights", metavar="imagenet|none|PATH",
              help=f"ImageNet (download), random init or a local .pth {_default('encoder_weights')}.")
@click.option("--loss", metavar="[" + "|".join(LOSSES) + "]",
              help=f"Loss [default: auto = {', '.join(f'{loss} for {arch}' for arch, loss in DEFAULT_LOSS.items())}, "
                   "ce for the others].")
@click.option("--aux-loss", metavar="W",
              help="Train with an auxiliary FCN head on the encoder's penultimate stage and add W times its loss, as "
                   "torchvision's reference (0.5) and MMSegmentation (0.4) do; the head is training-only, so "
                   "checkpoints' models and exports are unchanged [default: 0 = off].")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision [default: fp16 on CUDA, off on CPU; --amp on CPU = bf16].")
@click.option("--device", help=f"auto, cpu, cuda or cuda:N {_default('device')}.")
@click.option("--workers", metavar="N", help="Data-loader worker processes [default: CPUs - 1, at most 8].")
@click.option("--seed", metavar="N", help=f"Random seed; CPU runs with the same seed are reproducible "
                                           f"{_default('seed')}.")
@click.option("--categories", help=CATEGORIES_HELP)
@click.option("--compile/--no-compile", default=None,
              help="torch.compile the model for training and validation: faster epochs after a first one that "
                   "compiles; refused (exit 2) where it cannot work here.")
@click.option("--sync-bn", is_flag=True, default=None,
              help="SyncBatchNorm across processes under torchrun (CUDA only).")
@click.option("--progress", metavar="[" + "|".join(PROGRESS_MODES) + "]",
              help="Within an epoch: a bar, a line every ~30 s (step, images/s, loss, ETA), or nothing; "
                   f"auto = bar on a terminal, else log {_default('progress')}.")
@click.option("--tensorboard", is_flag=True, default=None,
              help="Also log to <out>/tensorboard/ (needs the tensorboard package).")
@click.option("--init-from", metavar="CHECKPOINT",
              help="Start from this trained model (fine-tuning): every weight that fits is kept, the classifier is "
                   "re-created when the categories differ, and the log says which layers were kept; the encoder "
                   "weights come from it (no --encoder-weights). Optimizer and epochs start afresh.")
@click.option("--resume", type=click.Path(path_type=Path),
              help=f"Continue the run of this {LAST}, in its folder (optimizer, RNG, history).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="JSON or YAML file with these settings (same names); flags given on the command line win.")
def fit_command(model: str, resume: Path | None, config_file: Path | None, exist_ok: bool, **flags) -> None:
    from segtrain.common.settings import COMMAND_LINE, build
    from segtrain.training.config import TrainConfig, load_config_file
    from segtrain.training.loop import fit
    from segtrain.training.resume import open_resume, resume_settings

    if resume and flags.get("init_from"):
        raise click.UsageError("--init-from starts a new run from a model; --resume continues a run: use one")
    layers = []
    ckpt = open_resume(resume) if resume else None
    if ckpt is not None:
        layers.append(resume_settings(ckpt))
    if config_file:
        layers.append((str(config_file), load_config_file(config_file)))
    layers.append((COMMAND_LINE, {**{k: v for k, v in flags.items() if v is not None}, "model": model}))
    result = fit(build(TrainConfig, layers), resume=ckpt, exist_ok=exist_ok)
    if result.is_main and result.best_epoch is not None:
        click.echo(f"best validation mIoU {100 * result.best_miou:.2f}% at epoch {result.best_epoch}; "
                   f"artifacts in {result.out}")


@main.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root [default: the one the model was trained on].")
@setting_option(CheckpointEvaluateConfig, "--split", help="validation or test (or train).")
@setting_option(CheckpointEvaluateConfig, "--batch-size")
@setting_option(CheckpointEvaluateConfig, "--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--at-input-size", is_flag=True,
              help="Score at the model's input size, as the per-epoch validation during training does.")
@setting_option(CheckpointEvaluateConfig, "--tta",
                help="Test-time augmentation: flip = the mean of the logits of each photo and of its mirror image "
                     "(as `segdeploy evaluate` and `batch` do it).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_command(as_json: bool, **options) -> None:
    """Per-class IoU, mIoU and pixel accuracy of a checkpoint on a split.

    Scores at each image's original size (logits resized back before the arg-max), with the
    same code `segdeploy evaluate` uses for ONNX models; --at-input-size reproduces the
    training-time validation figures instead.
    """
    from segtrain.common.settings import COMMAND_LINE, build
    from segtrain.training.evaluate import evaluate_checkpoint

    config = build(CheckpointEvaluateConfig, [(COMMAND_LINE, {k: v for k, v in options.items() if v is not None})])
    metrics = evaluate_checkpoint(config, progress=not as_json)
    click.echo(metrics.to_json() if as_json else f"{config.checkpoint} on {config.split}:\n{metrics.table()}")


if __name__ == "__main__":
    main()
