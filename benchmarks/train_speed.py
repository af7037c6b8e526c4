"""Training speed against its own ceilings, in one process (issue 22): for a model, input size, batch and device,

(a) the compute ceiling: the same model, loss and optimizer stepping on random tensors already on the
    device, waiting for it only at the end (GradScaler's own check aside), in every precision and memory format
    worth trying there (CUDA: fp16 autocast + GradScaler and bf16 autocast, each NCHW and channels_last;
    CPU: fp32 NCHW and channels_last); the ceiling is the best of them;
(b) the loader alone: segtrain's own training DataLoader (workers, prefetch, pinned memory, reduced JPEG
    decodes) over the real photos, each batch moved to the device, after one warm-up epoch;
(c) segtrain's own step: `prepare()` as `segtrain fit` runs it (its precision, memory format, loader,
    --compile when given) on the real photos.

It prints (c)/(a) and (c)/(b) and writes a JSON record. Every measure runs `--warmup` steps first (the
time they took is recorded: with --compile that is the compile cost), then times `--steps` steps.

    PYTHONPATH=. python benchmarks/train_speed.py --data ../shared/data/coco-mini --encoder resnet18 \\
        --image-size 256 --batch-size 8 --warmup 1 --steps 4 --json benchmarks/results/train_speed_cpu_r18_256.json

`--repeat N` trains on the training split listed N times (hard links or copies in a temporary folder), for runs
longer than one pass over a small dataset (the GPU script, benchmarks/gpu/run.sh, uses it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from segtrain.common.json_record import JsonRecord  # noqa: E402

SCHEMA = "segtrain-train-speed/1"


@dataclass
class Measure(JsonRecord):
    name: str
    images_per_s: float
    warmup_s: float  # the warm-up steps (with --compile: the compile), not in images_per_s
    data_wait: float | None = None  # share of step time blocked on the loader, for (c)


@dataclass
class TrainSpeed(JsonRecord):
    schema: str
    created: str
    command: str
    device: str
    torch: str
    model: str
    encoder: str
    image_size: int
    batch_size: int
    workers: int
    compile: bool
    warmup: int
    steps: int
    ceiling: list[Measure]  # (a), every precision and memory format tried
    loader: Measure  # (b)
    segtrain: Measure  # (c)
    segtrain_precision: str
    segtrain_over_ceiling: float  # (c) / best of (a)
    segtrain_over_loader: float  # (c) / (b)


def repeated_dataset(src: Path, times: int, into: Path) -> Path:
    """A dataset root whose train split lists `src`'s training photos `times` times, and `src`'s validation split."""
    from segtrain.data.coco import CocoSplit

    train = CocoSplit.open(src, "train")
    labels = json.loads((train.image_dir.parent / "labels.json").read_text())
    (into / "train" / "data").mkdir(parents=True)
    images, annotations = [], []
    for copy in range(times):
        for im in labels["images"]:
            name = f"{copy}_{Path(im['file_name']).name}"
            _link(train.image_dir / im["file_name"], into / "train" / "data" / name)
            images.append({**im, "id": copy * 10**9 + im["id"], "file_name": name})
        annotations += [{**a, "id": copy * 10**9 + a["id"], "image_id": copy * 10**9 + a["image_id"]}
                        for a in labels["annotations"]]
    (into / "train" / "labels.json").write_text(json.dumps({**labels, "images": images, "annotations": annotations}))
    validation = src / "validation" if (src / "validation").is_dir() else src / "val"
    shutil.copytree(validation, into / "validation", copy_function=_link)
    return into


def _link(src: Path | str, dest: Path | str) -> None:
    """A hard link, or a copy across file systems (segtrain refuses symlinks that leave the image folder)."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def timed(run_steps, warmup: int, steps: int, name: str) -> Measure:
    """`run_steps(n)` -> EpochSpeed of n steps: the warm-up, then the timed steps."""
    t0 = time.perf_counter()
    run_steps(warmup)
    warmup_s = time.perf_counter() - t0
    speed = run_steps(steps)
    return Measure(name, speed.images_per_s, warmup_s, speed.data_wait)


DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": None}


def ceiling(run, warmup: int, steps: int, compile_model: bool, precisions: list[str] | None) -> list[Measure]:
    """(a): forward, loss, backward and Adam on device tensors, per precision and memory format (a fresh model
    each); independent of segtrain's loop, so what that loop adds (waits, copies) shows in (c)/(a)."""
    import torch

    from segtrain.models import build_model
    from segtrain.training.compiling import compiled
    from segtrain.training.loop import EpochSpeed
    from segtrain.training.precision import Precision

    device = run.precision.device
    precisions = precisions or (["fp16", "bf16"] if device.type == "cuda" else ["fp32"])
    dtypes = [getattr(torch, DTYPES[p]) if DTYPES[p] else None for p in precisions]
    formats = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
    batch, (h, w) = run.train_loader.batch_size, run.spec.input_size
    out = []
    for dtype, (fmt_name, fmt) in itertools.product(dtypes, formats.items()):
        precision = Precision(device, dtype, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), fmt)
        model = precision.model(build_model(run.spec, encoder_weights="none"))
        net = compiled(model) if compile_model else model
        optimizer = torch.optim.Adam(model.parameters(), lr=run.cfg.lr)
        x = precision.batch(torch.randn(batch, 3, h, w))
        y = torch.randint(0, run.spec.num_classes, (batch, h, w), device=device)

        def run_steps(n: int, precision=precision, net=net, optimizer=optimizer, x=x, y=y) -> EpochSpeed:
            t0 = time.perf_counter()
            for _ in range(n):
                with precision.autocast():
                    loss = run.loss_fn(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                precision.scaler.scale(loss).backward()
                precision.scaler.step(optimizer)
                precision.scaler.update()
            loss.item()  # the only wait for the device (GradScaler's own check aside)
            return EpochSpeed(n * batch / (time.perf_counter() - t0), 0.0)

        out.append(timed(run_steps, warmup, steps, f"{precision.name.split(',')[0]}, {fmt_name}"))
        print(f"(a) {out[-1].name}: {out[-1].images_per_s:.2f} images/s", flush=True)
        del model, net, optimizer
    return out


def loader_alone(run, steps: int) -> Measure:
    """(b): the training DataLoader over the photos, batches moved to the device; one warm-up epoch, then
    whole epochs until `steps` batches have been timed."""
    from segtrain.training.loop import EpochSpeed

    def epochs(batches: int, first_epoch: int) -> EpochSpeed:
        images, t0, epoch = 0, time.perf_counter(), first_epoch
        while batches > 0:
            run.sampler.set_epoch(epoch)
            for x, _, _ in itertools.islice(run.train_loader, batches):
                run.precision.batch(x)
                images += len(x)
                batches -= 1
            epoch += 1
        if run.precision.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        return EpochSpeed(images / (time.perf_counter() - t0), 1.0)

    t0 = time.perf_counter()
    epochs(len(run.train_loader), 100)
    warmup_s = time.perf_counter() - t0
    return Measure("loader", epochs(steps, 200).images_per_s, warmup_s)


def segtrain_step(run, warmup: int, steps: int) -> Measure:
    """(c): `train_one_epoch` as `segtrain fit` runs it, warm-up and timed steps from one pass of the loader."""
    from segtrain.training.loop import train_one_epoch
    from segtrain.training.progress import Progress

    run.sampler.set_epoch(1)
    batches = iter(run.train_loader)

    def run_steps(n: int):
        return train_one_epoch(run.net, itertools.islice(batches, n), run.loss_fn, run.optimizer, run.precision,
                               run.ctx, 1, Progress("off", n, ""), lambda step: run.cfg.lr)[1]

    return timed(run_steps, warmup, steps, "segtrain")


def measure(args: argparse.Namespace, data: Path, command: str) -> TrainSpeed:
    import torch

    from segtrain.training.config import TrainConfig
    from segtrain.training.distributed import DistContext
    from segtrain.training.loop import prepare

    cfg = TrainConfig(model=args.model, data=str(data), encoder=args.encoder, encoder_weights="none",
                      image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
                      device=args.device, compile=args.compile, progress="off").resolved()
    run = prepare(cfg, DistContext(), None)
    if len(run.train_loader) < args.warmup + args.steps:
        raise SystemExit(f"{data}: {len(run.train_loader)} training batches, fewer than --warmup + --steps "
                         f"({args.warmup + args.steps}); use --repeat")
    print(run.notes[-1], flush=True)
    candidates = ceiling(run, args.warmup, args.steps, args.compile,
                         args.precisions.split(",") if args.precisions else None)
    loader = loader_alone(run, args.steps)
    print(f"(b) loader: {loader.images_per_s:.2f} images/s", flush=True)
    ours = segtrain_step(run, args.warmup, args.steps)
    print(f"(c) segtrain ({run.precision.name}): {ours.images_per_s:.2f} images/s, data wait "
          f"{100 * ours.data_wait:.0f}%", flush=True)
    best = max(m.images_per_s for m in candidates)
    return TrainSpeed(SCHEMA, datetime.now(timezone.utc).isoformat(timespec="seconds"), command,
                      str(run.precision.device) + (f" ({torch.cuda.get_device_name()})"
                                                   if run.precision.device.type == "cuda" else
                                                   f" ({platform.processor() or platform.machine()})"),
                      torch.__version__, cfg.model, cfg.encoder, cfg.image_size, run.train_loader.batch_size,
                      cfg.workers, cfg.compile, args.warmup, args.steps, candidates, loader, ours,
                      run.precision.name, ours.images_per_s / best, ours.images_per_s / loader.images_per_s)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    p.add_argument("--model", default="deeplab")
    p.add_argument("--encoder", default=None, help="default: the model's (resnet50, vgg16_bn)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=None, help="default: segtrain's (CPUs - 1, at most 8)")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile (a) and (c), as `segtrain fit --compile`")
    p.add_argument("--precisions", default=None,
                   help="(a)'s precisions: fp16,bf16,fp32 [default: fp16,bf16 on CUDA, fp32 on CPU]")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="list the training photos N times")
    p.add_argument("--json", type=Path, default=HERE / "results" / "train_speed.json")
    return p


def main(argv: list[str] | None = None) -> TrainSpeed:
    args = parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="train_speed_"))
    try:
        data = repeated_dataset(args.data, args.repeat, work / "data") if args.repeat > 1 else args.data
        command = "python benchmarks/train_speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
        report = measure(args, data, command)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"segtrain / compute ceiling (c)/(a): {report.segtrain_over_ceiling:.3f}; "
          f"segtrain / loader (c)/(b): {report.segtrain_over_loader:.3f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
