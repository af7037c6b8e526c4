"""The standard benchmark suite: `segdeploy bench` on coco-mini photos, results as JSON + markdown.

Models (checkpoints are made here when missing, in --work):

- deeplab_r50_512   DeepLabV3-ResNet50 (output stride 8) at 512 px, random init (speed only); timed
                    end to end with `segdeploy batch --runtime auto`, `onnxruntime` and `openvino` (FP32
                    and INT8, batch 1) on the 52 validation photos against the model-only figures
- segnet_vgg16_512  SegNet-VGG16-BN at 512 px, random init (speed only), batch 1 and 4
- deeplab_r18_256   DeepLabV3-ResNet18 at 256 px, the light config: trained on coco-mini
                    (`segtrain fit`, encoder weights none: nothing is downloaded) so its INT8 mIoU
                    change means something; timed end to end with `segdeploy batch` on the photos
                    (each --runtime, as above)

Each model is benched by its own `python -m segdeploy bench` process (same threads for every
backend), then the runs are gathered into ``<out>/results.json`` and ``<out>/results.md`` with
the machine and the command; plots land beside them. ``--quick`` runs small sizes with few runs,
into --work, as a smoke test of the whole path in a few minutes.

    python benchmarks/run_suite.py                # the standard suite -> benchmarks/results/
    python benchmarks/run_suite.py --quick        # smoke run -> benchmarks/work/quick/
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: import this checkout's packages

from targets import markdown, targets  # noqa: E402  (benchmarks/targets.py: this project's bars)

from segdeploy.bench.report import SCHEMA, BenchReport, ReportError  # noqa: E402
from segtrain.common.json_record import decode, encode, key  # noqa: E402
from segtrain.common.json_shape import ShapeError  # noqa: E402
from segtrain.training.runs import BEST_MODEL, RUNS_DIR  # noqa: E402

E2E_RUNTIMES = ("auto", "onnxruntime", "openvino")  # issue 24: end to end >= 0.95x model-only on both engines
DEFAULT_DATA = Path(os.environ.get("SEGTRAIN_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))
SUITE_SCHEMA = "segdeploy-bench-suite/1"


@dataclass(kw_only=True)
class SuiteResults:
    """<out>/results.json: each suite model's bench report and how its checkpoint was made."""

    schema: str  # SUITE_SCHEMA
    command: str  # the suite run
    reruns: list[str] = key(factory=list)  # `--only` runs since, whose models' reports replaced those of the suite
    runs: dict[str, BenchReport]
    checkpoints: dict[str, str]


@dataclass(frozen=True)
class SuiteModel:
    name: str
    arch: str
    encoder: str
    size: int
    trained: bool  # trained on the data (INT8 accuracy and end-to-end figures) or random init (speed only)
    bench_args: tuple[str, ...] = ()
    train_args: tuple[str, ...] = field(default=())
    e2e_photos: str | None = None  # folder under the data root timed end to end ("" = all of it); None: none
    e2e_batch: int = 4


STANDARD = (
    SuiteModel("deeplab_r50_512", "deeplab", "resnet50", 512, False,
               ("--batch-sizes", "1,4,8", "--runs", "5", "--warmup", "2", "--calibration-images", "8"),
               e2e_photos="validation/data", e2e_batch=1),
    # batch 8 left out: SegNet-512's five backends do not fit 24 GB at batch 8, even one after the other (closed
    # sessions leave pages resident), and a run killed for memory loses every figure
    SuiteModel("segnet_vgg16_512", "segnet", "vgg16_bn", 512, False,
               ("--batch-sizes", "1,4", "--runs", "5", "--warmup", "2", "--calibration-images", "8")),
    SuiteModel("deeplab_r18_256", "deeplab", "resnet18", 256, True,
               ("--batch-sizes", "1,4,8", "--runs", "10", "--warmup", "3", "--calibration-images", "32"),
               ("--epochs", "6", "--lr", "5e-4", "--batch-size", "8"), e2e_photos=""),
)
QUICK = (
    SuiteModel("deeplab_r18_128", "deeplab", "resnet18", 128, True,
               ("--batch-sizes", "1,2", "--runs", "2", "--warmup", "1", "--calibration-images", "4",
                "--accuracy-images", "8"),
               ("--epochs", "1", "--lr", "5e-4", "--batch-size", "8"), e2e_photos=""),
    SuiteModel("segnet_vgg16_64", "segnet", "vgg16_bn", 64, False,
               ("--batch-sizes", "1,2", "--runs", "2", "--warmup", "1", "--calibration-images", "2")),
)


def run(cmd: list[str], log: Path | None = None) -> None:
    """Run a command, echoing it; its output goes to the terminal and, when given, a log file."""
    print("$ " + shlex.join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True, cwd=REPO)
        return
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        if proc.wait():
            raise subprocess.CalledProcessError(proc.returncode, cmd)


def random_checkpoint(model: SuiteModel, path: Path, data: Path) -> None:
    """A random-init checkpoint (speed is independent of the weights), recording `data` for calibration."""
    import torch

    from segtrain.contract import build_spec
    from segtrain.models import build_model
    from segtrain.training.checkpoint import Checkpoint

    torch.manual_seed(0)
    spec = build_spec(model.arch, model.encoder, image_size=model.size)
    net = build_model(spec, encoder_weights="none").eval()
    Checkpoint(spec=spec, model=net.state_dict(), epoch=0,
               config={"data": str(Path(data).resolve()), "model": model.arch, "encoder": model.encoder,
                       "image_size": model.size, "encoder_weights": "none (random init)"}).save(path)


def from_checkpoint(template: SuiteModel, ckpt: Path) -> SuiteModel:
    """The light config as given by --light-checkpoint: its own architecture, encoder and size."""
    from segtrain.training.checkpoint import Checkpoint

    spec = Checkpoint.load(ckpt).spec
    short = spec.encoder.replace("resnet", "r")
    return dataclasses.replace(template, name=f"{spec.arch}_{short}_{spec.input_size[0]}", arch=spec.arch,
                               encoder=spec.encoder, size=spec.input_size[0])


def checkpoint_for(model: SuiteModel, work: Path, data: Path, light: Path | None) -> Path:
    """The model's checkpoint: reused when present, else trained (light config) or random-init."""
    if model.trained and light is not None:
        return light
    path = work / RUNS_DIR / model.name / BEST_MODEL
    if path.is_file():
        print(f"reusing {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.trained:
        run([sys.executable, "-m", "segtrain", "fit", model.arch, "--data", str(data), "--out", str(path.parent),
             "--encoder", model.encoder, "--encoder-weights", "none", "--image-size", str(model.size),
             "--seed", "0", *model.train_args], log=path.parent / "fit.log")
    else:
        random_checkpoint(model, path, data)
    return path


def rel(path: Path) -> str:
    """`path` relative to the repository root when it lies inside (commands then read the same anywhere)."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def bench(model: SuiteModel, ckpt: Path, args: argparse.Namespace, out: Path) -> BenchReport:
    cmd = [sys.executable, "-m", "segdeploy", "bench", rel(ckpt), *model.bench_args, "--data", str(args.data),
           "--onnx-dir", rel(args.work / "onnx"), "--json", rel(out / f"{model.name}.json")]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if model.e2e_photos is not None:  # end to end on each engine installed, and on the one auto picks
        runtimes = [r for r in E2E_RUNTIMES if r != "openvino" or importlib.util.find_spec("openvino") is not None]
        cmd += ["--photos", str(args.data / model.e2e_photos), "--e2e-batch-size", str(model.e2e_batch),
                "--runtime", ",".join(runtimes)]
    if not model.trained:
        cmd += ["--no-accuracy"]
    run(cmd, log=out / f"{model.name}.log")
    report = BenchReport.read(out / f"{model.name}.json")
    report.command = shlex.join(["python", "-m", "segdeploy", *cmd[3:]])
    return report


def training_note(model: SuiteModel, ckpt: Path) -> str:
    from segtrain.training.checkpoint import Checkpoint

    loaded = Checkpoint.load(ckpt)
    cfg = loaded.config
    if not model.trained:
        return "random init (speed only; FLOPs and speed do not depend on the weights)"
    miou = loaded.miou
    return (f"trained with `segtrain fit` on {cfg.get('data')}: {cfg.get('epochs')} epochs, batch "
            f"{cfg.get('batch_size')}, lr {cfg.get('lr')}, image size {cfg.get('image_size')}, encoder weights "
            f"{cfg.get('encoder_weights')}; best epoch {loaded.epoch}, validation mIoU at the input size "
            f"{'n/a' if miou is None else f'{100 * miou:.2f}%'}")


def earlier_results(out: Path, models: tuple[SuiteModel, ...]) -> SuiteResults | None:
    """The suite results already in `out` (results.json) when they are of this suite (its models, readable
    reports), else None."""
    try:
        suite = decode(SuiteResults, json.loads((out / "results.json").read_text()))
    except (OSError, ValueError, ShapeError, ReportError):
        return None
    names = {m.name for m in models}
    ok = suite.schema == SUITE_SCHEMA and set(suite.runs) <= names and all(
        r.schema == SCHEMA for r in suite.runs.values())
    return suite if ok else None


def merge_runs(docs: dict[str, BenchReport], notes: dict[str, str], command: str, earlier: SuiteResults | None,
               models: tuple[SuiteModel, ...]) -> tuple[dict, dict, str, list[str]]:
    """(reports, notes, suite command, rerun commands) to write: this run's, or with --only, the earlier
    run's models with this run's replacing theirs, in the suite's order."""
    if earlier is None:
        return docs, notes, command, []
    order = [m.name for m in models if m.name in docs or m.name in earlier.runs]
    return ({n: docs[n] if n in docs else earlier.runs[n] for n in order},
            {n: notes[n] if n in notes else earlier.checkpoints[n] for n in order},
            earlier.command, [*(c for c in earlier.reruns if c != command), command])  # the same rerun: once


def write_results(docs: dict[str, BenchReport], notes: dict[str, str], command: str, out: Path,
                  reruns: list[str] = ()) -> None:
    from segtrain.common.files import atomic_write_text

    suite = SuiteResults(schema=SUITE_SCHEMA, command=command, reruns=list(reruns), runs=docs, checkpoints=notes)
    atomic_write_text(out / "results.json", json.dumps(encode(suite), indent=2) + "\n")
    parts = ["# segdeploy benchmark suite", "", f"Suite command: `{command}` (from the repository root).", ""]
    parts += [f"Then rerun: `{c}` (its models' sections replace those of the suite run)." for c in reruns]
    parts += ["", "Each section is one `segdeploy bench` process; ratios compare backends measured in that same "
              "process, with the same threads. After a rerun, sections may come from different machines: each "
              "names its own (and the table below). See [README.md](README.md) for what is measured and how.", ""]
    summary = ["| model | machine, day | target | size | measured | bar | met |", "|---|---|---|---|---:|---:|---|"]
    for name, report in docs.items():
        where = f"{report.machine.cpu}, {report.created[:10]}"
        for model in report.models:
            for t in targets(model):
                size = f"{t.image_size[0]}x{t.image_size[1]}" if t.image_size else "-"
                summary.append(f"| {name} | {where} | {t.target} | {size} | {t.measured:.2f} | {t.threshold:g} | "
                               f"{'yes' if t.met else '**no**'} |")
    parts += ["## Targets", ""] + summary + [""]
    for name, report in docs.items():
        body = markdown(report, report.command, level=2).split("\n", 1)[1]  # drop its title: the section has one
        parts += [f"## {name}", "", f"Checkpoint: {notes[name]}.", body, f"![{name}]({name}.png)", ""]
    atomic_write_text(out / "results.md", "\n".join(parts))
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="Small sizes, few runs: a smoke test of the whole path.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="coco-mini root (default: %(default)s).")
    p.add_argument("--work", type=Path, default=HERE / "work", help="Checkpoints and exports (default: %(default)s).")
    p.add_argument("--out", type=Path, help="Results folder (default: benchmarks/results, quick: <work>/quick).")
    p.add_argument("--threads", type=int, help="Threads for every backend (default: the usable cores).")
    p.add_argument("--light-checkpoint", type=Path, help="Use this trained checkpoint for the light config.")
    p.add_argument("--only", nargs="+", help="Run only these suite models (by name); the results of the others "
                   "already in --out are kept.")
    args = p.parse_args(argv)
    if not (args.data / "train" / "labels.json").is_file():
        p.error(f"{args.data}: not a coco-mini root (no train/labels.json); pass --data")
    args.out = args.out or (args.work / "quick" if args.quick else HERE / "results")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = [m for m in (QUICK if args.quick else STANDARD) if not args.only or m.name in args.only]
    if args.light_checkpoint:
        models = [from_checkpoint(m, args.light_checkpoint) if m.trained else m for m in models]
    if not models:
        raise SystemExit(f"--only matches none of {', '.join(m.name for m in (QUICK if args.quick else STANDARD))}")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/run_suite.py", *(sys.argv[1:] if argv is None else argv)])
    t0 = time.time()
    docs, notes = {}, {}
    for model in models:
        ckpt = checkpoint_for(model, args.work, args.data, args.light_checkpoint)
        notes[model.name] = training_note(model, ckpt)
        docs[model.name] = bench(model, ckpt, args, args.out)
    suite_models = QUICK if args.quick else STANDARD
    earlier = earlier_results(args.out, suite_models) if args.only else None
    docs, notes, command, reruns = merge_runs(docs, notes, command, earlier, suite_models)
    write_results(docs, notes, command, args.out, reruns)
    print(f"suite finished in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
