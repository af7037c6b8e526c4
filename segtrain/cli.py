"""`segtrain`: dataset reports, training and evaluation.

Every command is a thin shell over a library function; errors derive from segtrain.common.errors and are
reported once, by the group (exit codes: segtrain.common.errors.EXIT_CODES).
"""

from __future__ import annotations

from pathlib import Path

import click

from segtrain import __version__
from segtrain.common.commandline import ToolGroup, exit_codes_epilog
from segtrain.common.errors import EXIT_FAILURE, EXIT_INPUT, EXIT_OK, InputError
from segtrain.evaluation import DEFAULT_SPLIT
from segtrain.training.config import LOSSES, LR_SCHEDULES, PROGRESS_MODES

EXIT_CODES_HELP = exit_codes_epilog((EXIT_OK, EXIT_FAILURE, EXIT_INPUT))


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
    data/, or the classic train2017/ + annotations/instances_train2017.json layout. Exits 2
    when a split is unusable.
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
@main.command("fit")
@click.argument("model", metavar="deeplab|segnet")
@click.option("--data", metavar="DIR", help=f"Dataset root with train/ and validation/ {_default('data')}.")
@click.option("--out", metavar="DIR",
              help="Output folder [default: runs/<model>, or the next free runs/<model>-N]; one that holds a "
                   "run is refused without --exist-ok or --resume.")
@click.option("--exist-ok", is_flag=True, help="Write into --out (or runs/<model>) even if it holds a run, "
                                               "replacing its files.")
@click.option("--epochs", metavar="N", help=f"Epochs to train (with --resume: the new total) {_default('epochs')}.")
@click.option("--batch-size", metavar="N",
              help=f"Images per batch (per process under torchrun) {_default('batch_size')}.")
@click.option("--lr", metavar="X", help=f"Adam learning rate (0 allowed) {_default('lr')}.")
@click.option("--weight-decay", metavar="X", help=f"Adam weight decay (L2) {_default('weight_decay')}.")
@click.option("--lr-schedule", metavar="[" + "|".join(LR_SCHEDULES) + "]",
              help=f"Learning-rate decay over the run, per step {_default('lr_schedule')}.")
@click.option("--warmup-epochs", metavar="N",
              help=f"Epochs of linear learning-rate warm-up before the schedule {_default('warmup_epochs')}.")
@click.option("--patience", metavar="N",
              help="Stop early when validation mIoU has not improved for N epochs (best_model.pth stays the best) "
                   "[default: off].")
@click.option("--image-size", metavar="N", help=f"Square input size, a multiple of 32 {_default('image_size')}.")
@click.option("--encoder", help="Encoder [default: resnet50 for deeplab (any smp encoder), vgg16_bn for segnet].")
@click.option("--encoder-weights", metavar="imagenet|none|PATH",
              help=f"ImageNet (download), random init or a local .pth {_default('encoder_weights')}.")
@click.option("--loss", metavar="[" + "|".join(LOSSES) + "]",
              help="Loss [default: auto = ce for deeplab, ce+dice for segnet].")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision [default: fp16 on CUDA, off on CPU; --amp on CPU = bf16].")
@click.option("--device", help=f"auto, cpu, cuda or cuda:N {_default('device')}.")
@click.option("--workers", metavar="N", help="Data-loader worker processes [default: CPUs - 1, at most 8].")
@click.option("--seed", metavar="N", help=f"Random seed; CPU runs with the same seed are reproducible "
                                           f"{_default('seed')}.")
@click.option("--categories", help=CATEGORIES_HELP)
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across processes under torchrun.")
@click.option("--progress", metavar="[" + "|".join(PROGRESS_MODES) + "]",
              help="Within an epoch: a bar, a line every ~30 s (step, images/s, loss, ETA), or nothing; "
                   f"auto = bar on a terminal, else log {_default('progress')}.")
@click.option("--tensorboard", is_flag=True, default=None,
              help="Also log to <out>/tensorboard/ (needs the tensorboard package).")
@click.option("--resume", type=click.Path(path_type=Path),
              help="Continue the run of this last.pth, in its folder (optimizer, RNG, history).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="JSON or YAML file with these settings (same names); flags given on the command line win.")
def fit_command(model: str, resume: Path | None, config_file: Path | None, exist_ok: bool, **flags) -> None:
    """Train MODEL (deeplab or segnet) on a COCO dataset.

    \b
    Writes to runs/<model>/ (or the next free runs/<model>-N/, or --out), after every epoch:
      best_model.pth, last.pth     best validation mIoU; latest, for --resume
      metrics.csv, config.json     per-epoch metrics; the resolved settings
      loss.png, miou.png           curves, the best epoch marked
      confusion.png, samples.png   the best epoch's confusion matrix and predictions
    Validation mIoU is measured at the input size after every epoch. Under torchrun the same
    command trains with DistributedDataParallel.
    """
    from segtrain.common.settings import COMMAND_LINE, build
    from segtrain.training.config import TrainConfig, load_config_file
    from segtrain.training.loop import fit
    from segtrain.training.resume import open_resume, resume_settings

    layers = []
    ckpt = open_resume(resume) if resume else None
    if ckpt is not None:
        layers.append(resume_settings(ckpt))
    if config_file:
        layers.append((str(config_file), load_config_file(config_file)))
    layers.append((COMMAND_LINE, {**{k: v for k, v in flags.items() if v is not None}, "model": model}))
    result = fit(build(TrainConfig, layers), resume=ckpt, exist_ok=exist_ok)
    if result["is_main"] and result["best_epoch"] is not None:
        click.echo(f"best validation mIoU {100 * result['best_miou']:.2f}% at epoch {result['best_epoch']}; "
                   f"artifacts in {result['out']}")


@main.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root [default: the one the model was trained on].")
@click.option("--split", default=DEFAULT_SPLIT, show_default=True, help="validation or test (or train).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--at-input-size", is_flag=True,
              help="Score at the model's input size, as the per-epoch validation during training does.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_command(checkpoint: Path, data: Path | None, split: str, batch_size: int, device: str,
                     at_input_size: bool, as_json: bool) -> None:
    """Per-class IoU, mIoU and pixel accuracy of a checkpoint on a split.

    Scores at each image's original size (logits resized back before the arg-max), with the
    same code `segdeploy evaluate` uses for ONNX models; --at-input-size reproduces the
    training-time validation figures instead.
    """
    from segtrain.training.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, data, split, batch_size=batch_size, device=device,
                                  progress=not as_json, at_input_size=at_input_size)
    click.echo(metrics.to_json() if as_json else f"{checkpoint} on {split}:\n{metrics.table()}")


if __name__ == "__main__":
    main()
