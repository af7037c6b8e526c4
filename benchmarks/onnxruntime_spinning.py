"""onnxruntime's spinning threads in the batch pipeline (segdeploy.infer.runtime.SPINNING_NOTE): `segdeploy batch
--runtime onnxruntime` end to end with the session's threads spinning (onnxruntime's default) and not (what
`segdeploy batch` uses), against model-only rates of the same two settings, in one process with the settings
interleaved round by round; prints and writes JSON.

Model-only: an OnnxModel on a synthetic batch, at batch 1 and at --batch (median of 20 and 10 runs after two
warm-up runs); the --batch figure is taken just before and just after the end-to-end run and averaged. End to
end: `run_batch` (default outputs) over the photo folder at --batch, images/s after the session is made, as
`segdeploy bench` measures it; the "spinning" setting reaches the pipeline's Predictor through a stand-in for
the batch run's Predictor class (the command line has no such option: the batch run always uses
spinning=False).

    python benchmarks/onnxruntime_spinning.py MODEL.onnx --photos DIR [DIR...] --batch 4 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402

from segdeploy.bench.timing import time_runs  # noqa: E402
from segdeploy.infer.batch import run as batch_run  # noqa: E402
from segdeploy.infer.runtime import OnnxModel  # noqa: E402


def model_only(model: Path, batch: int, threads: int, spinning: bool, runs: int) -> float:
    m = OnnxModel(model, provider="cpu", threads=threads, spinning=spinning)
    h, w = m.spec.input_size
    x = np.random.default_rng(0).standard_normal((batch, 3, h, w), dtype=np.float32)
    return batch / (time_runs(lambda: m.run(x), runs, warmup=2).latency.p50 / 1e3)


@contextlib.contextmanager
def batch_spinning(spinning: bool) -> Iterator[None]:
    """The batch run's Predictor opened with `spinning` (it passes spinning=False itself)."""
    real = batch_run.Predictor

    class Predictor(real):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "spinning": spinning})

    batch_run.Predictor = Predictor
    try:
        yield
    finally:
        batch_run.Predictor = real


def end_to_end(model: Path, photos: list[Path], batch: int, threads: int, spinning: bool) -> float:
    from segdeploy.infer.batch.config import BatchConfig

    out = Path(tempfile.mkdtemp(prefix="spinning-"))
    try:
        with batch_spinning(spinning):
            result = batch_run.run_batch(BatchConfig(sources=photos, out_dir=out, model=model,
                                                     runtime="onnxruntime", threads=threads, batch_size=batch,
                                                     progress=False), log=lambda m: None)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    totals = result.summary.totals
    assert totals.failed == 0 and totals.processed > 0
    return totals.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--photos", type=Path, nargs="+", required=True, help="Folders of photos (one run over all).")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings = {"spinning": True, "not spinning": False}
    rows: dict[str, dict[str, list[float]]] = {name: {"model_only_batch_1": [], "model_only": [], "end_to_end": []}
                                               for name in settings}
    for r in range(args.rounds):
        for name, spinning in settings.items():
            row = rows[name]
            row["model_only_batch_1"].append(model_only(args.model, 1, args.threads, spinning, 20))
            before = model_only(args.model, args.batch, args.threads, spinning, 10)
            row["end_to_end"].append(end_to_end(args.model, args.photos, args.batch, args.threads, spinning))
            after = model_only(args.model, args.batch, args.threads, spinning, 10)
            row["model_only"].append((before + after) / 2)
            print(f"round {r} {name}: model-only batch 1 {row['model_only_batch_1'][-1]:.2f}, batch {args.batch} "
                  f"{row['model_only'][-1]:.2f}, end to end {row['end_to_end'][-1]:.2f} images/s", flush=True)
    summary = {name: {**{k: round(statistics.median(v), 2) for k, v in row.items()},
                      "ratio": round(statistics.median(e / m for e, m in zip(row["end_to_end"], row["model_only"],
                                                                           strict=True)), 3)}
               for name, row in rows.items()}
    for name, figures in summary.items():
        print(f"{name}: {figures}")
    if args.json:
        doc = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "model": args.model.name, "photos": sum(1 for folder in args.photos for _ in folder.glob("*.jpg")),
               "batch": args.batch,
               "threads": args.threads, "rounds": args.rounds, "runs": rows, "medians": summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
