"""`segtrain`: dataset reports, training and evaluation.

Every command is a thin shell over a library function; errors derive from segtrain.errors and are
reported once, by the group (exit codes: segtrain.errors.EXIT_CODES).
"""

from __future__ import annotations

from pathlib import Path

import click

from segtrain import __version__
from segtrain.cli_support import FiniteFloat, ToolGroup, exit_codes_epilog
from segtrain.errors import EXIT_FAILURE, EXIT_INPUT, EXIT_OK, InputError
from segtrain.limits import MAX_INPUT_SIDE

EXIT_CODES_HELP = exit_codes_epilog((EXIT_OK, EXIT_INPUT, EXIT_FAILURE))


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
    from segtrain.report import dataset_report

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
    from segtrain.synthetic import make_sample_dataset

    make_sample_dataset(root, seed=seed)
    click.echo(f"wrote a synthetic COCO dataset to {root}")


@main.command("fit")
@click.argument("model", type=click.Choice(["deeplab", "segnet"]))
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root with train/ and validation/ [default: ./data].")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder [default: runs/<model>].")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Epochs to train (with --resume: the new total) [default: 30].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per batch (per process under torchrun) [default: 8].")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), help="Adam learning rate [default: 1e-4].")
@click.option("--image-size", type=click.IntRange(min=32, max=MAX_INPUT_SIDE),
              help="Square input size, a multiple of 32 [default: 512].")
@click.option("--encoder", help="Encoder [default: resnet50 for deeplab (any smp encoder), vgg16_bn for segnet].")
@click.option("--encoder-weights", help="imagenet (download), none (random init) or a local .pth [default: imagenet].")
@click.option("--loss", type=click.Choice(["auto", "ce", "ce+dice", "dice"]),
              help="Loss [default: auto = ce for deeplab, ce+dice for segnet].")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision [default: fp16 on CUDA, off on CPU; --amp on CPU = bf16].")
@click.option("--device", help="auto, cpu, cuda or cuda:N [default: auto].")
@click.option("--workers", type=click.IntRange(min=0),
              help="Data-loader worker processes [default: CPUs - 1, at most 8].")
@click.option("--seed", type=click.IntRange(min=0),
              help="Random seed; CPU runs with the same seed are reproducible [default: 0].")
@click.option("--categories", help=CATEGORIES_HELP)
@click.option("--sync-bn", is_flag=True, default=None, help="SyncBatchNorm across processes under torchrun.")
@click.option("--resume", type=click.Path(path_type=Path), help="Continue from a last.pth (optimizer, RNG, history).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="JSON or YAML file with these settings; flags given on the command line win.")
def fit_command(model: str, resume: Path | None, config_file: Path | None, **flags) -> None:
    """Train MODEL (deeplab or segnet) on a COCO dataset.

    Writes to --out: best_model.pth (best validation mIoU), last.pth (for --resume),
    metrics.csv, loss.png, miou.png and config.json. Validation mIoU is measured at the input
    size after every epoch. Under torchrun the same command trains with DistributedDataParallel.
    """
    from segtrain.checkpoint import Checkpoint
    from segtrain.config import TrainConfig, load_config_file
    from segtrain.train import fit

    settings: dict = {}
    if resume:
        settings.update(Checkpoint.load(resume).config)
    if config_file:
        settings.update(load_config_file(config_file))
    settings.update({k: v for k, v in flags.items() if v is not None})
    settings["model"] = model
    if isinstance(settings.get("categories"), str):
        settings["categories"] = parse_categories(settings["categories"])
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
    result = fit(TrainConfig(**settings), resume=resume)
    if result["is_main"] and result["best_epoch"] is not None:
        click.echo(f"best validation mIoU {100 * result['best_miou']:.2f}% at epoch {result['best_epoch']}; "
                   f"artifacts in {result['out']}")


@main.command("evaluate")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path),
              help="Dataset root [default: the one the model was trained on].")
@click.option("--split", default="validation", show_default=True, help="validation or test (or train).")
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
    from segtrain.torch_eval import evaluate_checkpoint

    metrics = evaluate_checkpoint(checkpoint, data, split, batch_size=batch_size, device=device,
                                  progress=not as_json, at_input_size=at_input_size)
    click.echo(metrics.to_json() if as_json else f"{checkpoint} on {split}:\n{metrics.table()}")


if __name__ == "__main__":
    main()
