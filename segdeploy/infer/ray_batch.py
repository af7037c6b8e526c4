"""Batch inference on Ray Data (the `ray` extra; torch-free): `segdeploy batch --engine ray` and `predict_dataset`.

Ray Data's batch-inference pattern: a callable class (`PredictActor`) loads the model once per actor in
`__init__` and segments a batch of photos per call; `map_batches(..., compute=ActorPoolStrategy(size=N))` runs N
of them. Each actor reads its photos from where they are (a local path or an object-store URL), writes their
outputs straight to DEST with the same write stage as a local run (so the files are the same bytes), and returns
one row per photo: its key, its summary record (JSON), the mask PNG it wrote, or why it failed. The driver
assembles the summary, the ground-truth scores and predictions.json from those rows.

`run_on_ray` is what `segdeploy batch --engine ray` calls for the images of a planned run (videos run on the
driver); `predict_dataset` takes and returns a `ray.data.Dataset` for a user's own pipeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from segdeploy.infer.batch.decode import decode
from segdeploy.infer.batch.outputs import DEFAULT_SAVE, OutputPaths, OutputWriteError, decode_mask, output_paths
from segdeploy.infer.batch.plan import Job
from segdeploy.infer.batch.resume import Fingerprint
from segdeploy.infer.batch.summary import ImageRecord
from segdeploy.infer.batch.write import ImageResult, ImageWriter
from segdeploy.infer.pipeline import Failure, MemoryBudget, run_pipeline
from segdeploy.infer.predictor import DEFAULT_BATCH_SIZE, Predictor
from segdeploy.infer.storage import location
from segtrain.common.errors import InputError
from segtrain.common.files import file_sha256

RAY_EXTRA = 'pip install "segtrain[ray]"'
WRITE_STOPPED = "write stopped: "  # a row's reason when DEST took no more (the run stops, as a local one does)
# The columns of a result row.
COLUMNS = ("input", "record", "mask", "error")


class RayUnavailable(InputError):
    """--engine ray without Ray installed, or a cluster that cannot be reached."""


def require_ray() -> None:
    """RayUnavailable unless Ray Data can be imported (checked before a run writes anything)."""
    _ray()


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise RayUnavailable(f"--engine ray needs Ray Data, which is not installed here ({e}): {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class ActorSettings:
    """What each actor needs to make and write outputs as `segdeploy batch` does (picklable)."""

    model: str
    out_dir: str
    fingerprint: Fingerprint
    provider: str = "auto"
    runtime: str = "auto"
    threads: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    reduced: bool = False
    workers: int = 2  # decode and write threads of each actor
    memory_budget: int = 1 << 30  # bytes the photos in flight in one actor may hold (beyond one model call)


class PredictActor:
    """One Predictor per Ray actor (its runtime and threads chosen here, once), writing outputs to DEST."""

    def __init__(self, settings: ActorSettings) -> None:
        fp = settings.fingerprint
        self.settings = settings
        self.predictor = Predictor(settings.model, provider=settings.provider, threads=settings.threads,
                                   runtime=settings.runtime, tile=fp.tile, tile_overlap=fp.tile_overlap,
                                   batch_size=settings.batch_size, tta=fp.tta, spinning=False)
        self.out_dir = location(settings.out_dir)
        self.writer = ImageWriter(self.predictor.spec, self.out_dir, fp, None, None)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The photos of `batch` through the local run's overlapped pipeline (decode and write threads around the
        model), a row per photo."""
        jobs = [Job(str(key), location(source), location(root),
                    OutputPaths({kind: self.out_dir / rel for kind, rel in json.loads(outputs).items()}))
                for key, source, root, outputs in zip(batch["input"], batch["source"], batch["root"],
                                                      batch["outputs"], strict=True)]
        s = self.settings
        rows: list[dict[str, Any]] = []
        results = run_pipeline(jobs, lambda job, reserve: decode(job, self.predictor, reserve, s.fingerprint.save,
                                                                 s.reduced, s.memory_budget),
                               self.predictor.infer, self._write, self.predictor.batch_size, s.workers,
                               MemoryBudget(s.memory_budget))
        with contextlib.closing(results):
            for row in results:
                rows.append(_failure_row(row) if isinstance(row, Failure) else row)
        return {name: np.array([row[name] for row in rows], dtype=object) for name in COLUMNS}

    def _write(self, prediction: Any) -> dict[str, Any] | Failure:
        key = prediction.source.job.key
        try:
            result = self.writer(prediction)
        except OutputWriteError as e:
            return {"input": key, "record": "", "mask": b"", "error": WRITE_STOPPED + str(e)}
        if isinstance(result, Failure):
            return result
        mask = prediction.source.job.outputs.mask
        return {"input": key, "record": json.dumps(result.record.to_dict()), "mask": mask.read_bytes(), "error": ""}


def _failure_row(failure: Failure) -> dict[str, Any]:
    return {"input": failure.input, "record": "", "mask": b"", "error": failure.reason}


CONNECT_TIMEOUT_S = 10.0


def _reachable(address: str) -> None:
    """RayUnavailable when `address` names a host and port (GCS's, or a ray:// client server's) where nothing
    answers: ray.init would retry it for minutes, warning every few seconds, instead of failing."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local", a bare host: Ray's own rules
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise RayUnavailable(f"--ray-address {address}: cannot connect to a Ray cluster (nothing answers at "
                             f"{host_port}: {reason})") from None


def connect(address: str | None) -> Any:
    """Ray, connected: the running instance, the cluster at `address`, or a new local one; else RayUnavailable
    in one line."""
    import logging

    ray = _ray()
    if not ray.is_initialized():
        if address:
            _reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                     logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailable(f"--ray-address {address}: cannot connect to a Ray cluster ({e})") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the run has its own bar; Ray's would print a block per few seconds
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _actor_pool(ray: Any, actors: int | None, threads: int | None, spare: int = 0) -> tuple[Any, int]:
    """The actor pool and the CPUs (runtime threads) of each actor. By default as many actors as the cluster's
    CPUs (less `spare`, left for the tasks that read a dataset) hold at `threads` each; with `actors` and no
    `threads`, the CPUs shared between them."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) - spare)
    per_actor = threads or (max(1, cpus // actors) if actors else 1)
    if actors is None:
        actors = max(1, cpus // per_actor)
    return ray.data.ActorPoolStrategy(size=actors), per_actor


def _rows_to_results(rows: Iterator[dict[str, Any]], writer: ImageWriter) -> Iterator[ImageResult | Failure]:
    """Result rows as the write stage's results, on the driver: scores against --gt and COCO entries are made
    from each row's mask; a row of a refused write stops the run (OutputWriteError). A row seen twice (a retried
    task) counts once."""
    seen: set[str] = set()
    for row in rows:
        key = str(row["input"])
        if key in seen:
            continue
        seen.add(key)
        error = str(row["error"])
        if error.startswith(WRITE_STOPPED):
            raise OutputWriteError(Path(key), OSError(0, error.removeprefix(WRITE_STOPPED)))
        if error:
            yield Failure(key, error)
            continue
        record = ImageRecord.decode(json.loads(row["record"]))
        coco: list[dict] = []
        if writer.truth is not None or "rle" in writer.save:
            mask = decode_mask(bytes(row["mask"]), key)
            if writer.truth is not None:
                writer.truth.update(key, mask)
            if "rle" in writer.save:
                coco = writer.coco_entries(key, mask, {int(k): v for k, v in (record.scores or {}).items()})
        yield ImageResult(record, coco)


def run_on_ray(jobs: list[Job], writer: ImageWriter, settings: ActorSettings, address: str | None = None,
               actors: int | None = None) -> Iterator[ImageResult | Failure]:
    """Segment the image `jobs` on Ray (one PredictActor per actor), outputs written by the actors to DEST; yields
    a result per job, in the order they finish."""
    if not jobs:
        return _rows_to_results(iter(()), writer)
    ray = connect(address)
    out = location(settings.out_dir)
    items = [{"input": job.key, "source": str(job.source), "root": str(job.root),
              "outputs": json.dumps(job.outputs.as_dict(out))} for job in jobs]
    compute, cpus = _actor_pool(ray, actors, settings.threads)
    settings = replace(settings, threads=cpus)
    blocks = max(1, min(len(items), 4 * compute.max_size))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    results = dataset.map_batches(PredictActor, fn_constructor_args=(settings,), batch_size=_rows_per_call(settings),
                                  compute=compute, num_cpus=cpus, batch_format="numpy")
    return _rows_to_results(results.iter_rows(), writer)


def predict_dataset(dataset: Any, model: str | os.PathLike, out: str | os.PathLike | None = None,
                    root: str | None = None, save: Sequence[str] = DEFAULT_SAVE, actors: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, provider: str = "auto",
                    runtime: str = "auto", tta: str = "off") -> Any:
    """Segment a `ray.data.Dataset` of photos: one row per photo in, one row per result out (`tta`: "flip"
    averages each photo's logits with its mirror's, as `segdeploy batch --tta flip`).

    Rows in have a "path" (a local path or an object-store URL; `ray.data.read_binary_files(...,
    include_paths=True)` gives one, with "bytes" that are then ignored: each actor reads its photo itself, as
    `segdeploy batch` does). `root` is the folder or URL prefix the outputs' keys are relative to (default: each
    path's own folder). With `out`, each photo's outputs (`save`, as `segdeploy batch --save`) are written there,
    the same bytes as `segdeploy batch` writes; without it, masks are made in a temporary folder of each worker.

    Rows out: "input" (the key), "record" (its summary.json record as JSON, "" when it failed), "mask" (the class
    mask as an indexed PNG, b"" when it failed), "error" (why it failed, "" when it did not).
    """
    import tempfile

    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.outputs import resolve_save
    from segtrain.common.settings import default

    ray = _ray()
    save = resolve_save(save)
    digest = file_sha256(model)  # streamed, as a local run fingerprints its model
    def made(name: str) -> Any:  # what `segdeploy batch` makes outputs with when not told otherwise
        return default(BatchConfig, name)

    fingerprint = Fingerprint(digest, made("alpha"), save, made("legend"), made("tile"), made("tile_overlap"), tta)
    target = str(out) if out is not None else tempfile.mkdtemp(prefix="segdeploy-ray-")
    settings = ActorSettings(str(model), target, fingerprint, provider, runtime, threads, batch_size)
    out_dir = location(target)

    def to_job_row(row: dict[str, Any]) -> dict[str, Any]:
        path = str(row["path"])
        base = root if root is not None else path.rsplit("/", 1)[0]
        key = _key(path, base)
        if root is not None and "://" in root and "://" not in path:  # read_binary_files drops the scheme
            path = root.split("://", 1)[0] + "://" + path.lstrip("/")
        return {"input": key, "source": path, "root": base,
                "outputs": json.dumps(output_paths(out_dir, Path(key), save).as_dict(out_dir))}

    compute, cpus = _actor_pool(ray, actors, threads, spare=1)
    settings = replace(settings, threads=cpus)
    return dataset.map(to_job_row).map_batches(PredictActor, fn_constructor_args=(settings,),
                                               batch_size=_rows_per_call(settings), compute=compute, num_cpus=cpus,
                                               batch_format="numpy")


def _rows_per_call(settings: ActorSettings) -> int:
    """Photos per call of an actor: enough for its decode and write threads to overlap the model."""
    return max(4 * settings.batch_size, 16)


def _key(path: str, root: str) -> str:
    """`path` relative to `root`, whichever of them carries a scheme (read_binary_files drops s3://)."""
    p, r = _no_scheme(path).lstrip("/"), _no_scheme(root).rstrip("/").lstrip("/")
    return p[len(r):].lstrip("/") if r and p.startswith(r + "/") else p.rsplit("/", 1)[-1]


def _no_scheme(text: str) -> str:
    return text.split("://", 1)[1] if "://" in text else text
