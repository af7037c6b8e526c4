"""`--runtime auto` on the CPU, measured (torch-free): `open_chosen` opens the faster of onnxruntime and OpenVINO
for this model file, input size, batch size and thread count on this machine.

Why measure: which engine is faster depends on the model and the CPU (benchmarks/README.md: OpenVINO FP32 from
0.82x to 1.08x of onnxruntime, INT8 from 0.92x to 1.38x), so a fixed rule picks the slower one on half the
cases measured. The rules of `runtime.resolve_runtime` still decide first: a pinned --runtime, a GPU provider, or
one installed engine is used without measuring.

How: both engines are opened and run once on a synthetic batch of the job's shape (warm-up: shape planning,
kernel compilation), then timed in rounds, each round running both in an order that alternates, so a slow spell
of a shared machine falls on both; where a run is short, each timed run follows an untimed one of the same
engine, so the switch from the other engine (its threads still spinning) is not timed. Rounds go on until
MAX_ROUNDS, or once MIN_ROUNDS are done (one, when opening and warming up already took BASE_SECONDS), until the
time spent (opening the second engine included) reaches the budget: BASE_SECONDS, or SHARE of the job's expected
time when that is larger. The faster median wins; the other engine is closed. A model of seconds per batch still
costs the loser's warm-up and one run of each.

Cache: the answer is remembered in CACHE_FILE in the tools' cache folder (segtrain.common.files.user_cache_dir:
~/.cache/segtrain, or $SEGTRAIN_CACHE_DIR; off: measure every time), per model file sha256, CPU, threads, batch
size, input size, the two engines' versions and whether onnxruntime's threads spin (runtime.SPINNING_NOTE: not
in the overlapped pipeline of `segdeploy batch`), so a later run with the same settings opens one engine and
measures nothing. A cache that cannot be read is ignored (with a note) and replaced; one that cannot be written
costs only the note.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from segdeploy.infer.openvino_runtime import OpenVinoModel, openvino_version
from segdeploy.infer.runtime import Model, OnnxModel, open_model, read_model_metadata, resolve_runtime
from segtrain.common.errors import ToolError
from segtrain.common.files import atomic_write_text, file_kind, file_sha256, user_cache_dir
from segtrain.common.json_record import JsonRecord, key
from segtrain.common.system import cpu_features, cpu_name, usable_cores

__all__ = ["CACHE_FILE", "Measured", "open_chosen"]

CACHE_FILE = "runtime-choices.json"
CACHE_SCHEMA = "segdeploy-runtime-choices/2"  # /1 timed the run right after a switch of engine: not reused
MAX_ENTRIES = 500  # the most recent measurements kept
BASE_SECONDS = 3.0  # the measurement may always take this long ...
SHARE = 0.02  # ... or this share of the job's expected time, when larger
MIN_ROUNDS, MAX_ROUNDS = 2, 30
# An engine whose warm-up run was shorter than this gets an untimed run of the same engine just before each
# timed one. Switching engines costs the first run after the switch: onnxruntime's pool threads go on spinning
# after a run, and OpenVINO's next run shares the cores with them. Timed back to back, DeepLabV3-R18-256 INT8 at
# batch 1 measured OpenVINO at 16.9 images/s against its 31.4 in segdeploy bench's rounds (which re-warm the
# same way), and auto took onnxruntime (22.3) in three tries out of three.
REWARM_BELOW_SECONDS = 1.0
Note = Callable[[str], None]
_log = logging.getLogger("segdeploy")


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


class Engine(NamedTuple):
    open: Callable[[str | Path, int | None, bool], Model]  # (model file, threads, spinning) -> the model on the CPU
    version: Callable[[], str]


# The engines auto chooses between (tests put fakes here).
ENGINES: dict[str, Engine] = {
    "onnxruntime": Engine(lambda path, threads, spinning: OnnxModel(path, provider="cpu", threads=threads,
                                                                    spinning=spinning), _onnxruntime_version),
    "openvino": Engine(lambda path, threads, spinning: OpenVinoModel(path, threads=threads), openvino_version),
}


@dataclass
class Measured(JsonRecord):
    """One measurement: what it was of (the cache key) and what it found."""

    model_sha256: str
    cpu: str
    threads: int | None  # None: each engine's default
    batch_size: int
    input_size: tuple[int, ...]
    versions: dict[str, str]  # engine -> version
    chosen: str
    images_per_second: dict[str, float]  # engine -> batch size / median latency
    timed_runs: int  # per engine
    seconds: float  # what the measurement cost, opening the second engine included
    measured_at: str = ""
    spinning: bool = True  # onnxruntime's threads spin-wait (runtime.SPINNING_NOTE); entries before it did

    def same_case(self, other: Measured) -> bool:
        return (self.model_sha256, self.cpu, self.threads, self.batch_size, tuple(self.input_size), self.versions,
                self.spinning) == (other.model_sha256, other.cpu, other.threads, other.batch_size,
                                   tuple(other.input_size), other.versions, other.spinning)

    def reason(self, cached: bool) -> str:
        """The reason a run reports: the choice and the two figures."""
        rates = self.images_per_second
        other = next(name for name in rates if name != self.chosen)
        how = "cached measurement" if cached else f"measured in {self.seconds:.1f} s"
        return (f"auto: {self.chosen} {rates[self.chosen]:.2f} vs {other} {rates[other]:.2f} images/s "
                f"(batch {self.batch_size}, {self.threads or 'default'} threads; {how})")


@dataclass
class RuntimeCache(JsonRecord):
    schema: str
    entries: list[Measured] = key(factory=list)


def open_chosen(path: str | Path, runtime: str = "auto", provider: str = "auto", threads: int | None = None,
                batch_size: int = 1, expected_images: int | None = None, note: Note | None = None,
                remember: bool = True, spinning: bool = True) -> Model:
    """The model opened with the engine --runtime asks for; for auto on the CPU with both engines installed,
    the faster one here (measured, or remembered). `expected_images`: how many images the job runs (its
    expected time sizes the measurement); `note`: where a cache that cannot be read or written is said (default:
    the "segdeploy" logger); `remember=False`: neither read nor write the cache (measure now). The model's
    `runtime_reason` says which engine and why (with both figures): what runs report. `spinning`: onnxruntime's
    (runtime.SPINNING_NOTE); it is measured as it will run."""
    choice = resolve_runtime(runtime, provider)
    if runtime != "auto" or choice.runtime != "openvino":  # pinned, on a GPU, or one engine installed
        return open_model(path, runtime=runtime, provider=provider, threads=threads, spinning=spinning)
    say = note or _log.info
    case = _case(path, threads, batch_size, spinning)
    cached = _lookup(case, say) if remember else None
    if cached is not None:
        model = ENGINES[cached.chosen].open(path, threads, spinning)
        model.runtime_reason = cached.reason(cached=True)
    else:
        model, measured, reason = _measure(path, threads, batch_size, expected_images, case)
        model.runtime_reason = reason
        if measured is not None and remember:
            _remember(measured, say)
    return model


def _case(path: str | Path, threads: int | None, batch_size: int, spinning: bool = True) -> Measured:
    """A Measured with the key fields filled (the result fields empty); ModelLoadError for a bad model file."""
    spec = read_model_metadata(path).spec
    return Measured(model_sha256=file_sha256(path), cpu=_cpu(), threads=threads, batch_size=batch_size,
                    input_size=tuple(spec.input_size),
                    versions={name: engine.version() for name, engine in ENGINES.items()},
                    chosen="", images_per_second={}, timed_runs=0, seconds=0.0, spinning=spinning)


def _cpu() -> str:
    """The CPU as measurements are keyed: its name, the instruction sets that pick kernels, the usable cores."""
    return f"{cpu_name()} [{' '.join(cpu_features())}] {usable_cores()} cores"


def _measure(path: str | Path, threads: int | None, batch_size: int, expected_images: int | None,
             case: Measured) -> tuple[Model, Measured | None, str]:
    """Open both engines, time them in alternating rounds within the budget: (the faster model, the record, the
    reason). The time spent counts from opening the second engine (the job opens one anyway). An engine that
    cannot run the job's batch (a fixed batch size, an operator it lacks) loses; when neither can, the rule's
    engine is returned for the job to report its error; neither case is remembered."""
    models = {"openvino": ENGINES["openvino"].open(path, threads, case.spinning)}
    t0 = time.perf_counter()
    models["onnxruntime"] = ENGINES["onnxruntime"].open(path, threads, case.spinning)
    x = np.random.default_rng(0).standard_normal((batch_size, 3, *case.input_size), dtype=np.float32)
    failed, warm_up = {}, {}
    for name, m in models.items():
        start = time.perf_counter()
        if (problem := _try_run(m, x)) is not None:
            failed[name] = problem
        warm_up[name] = time.perf_counter() - start
    if failed:
        chosen = next((name for name in models if name not in failed), "openvino")
        why = "; ".join(f"{name} failed on a batch of {batch_size}: {problem}" for name, problem in failed.items())
        return models[chosen], None, f"auto: {chosen}, not measured ({why})"
    rewarm = {name for name, seconds in warm_up.items() if seconds < REWARM_BELOW_SECONDS}
    times = _rounds(models, x, t0, expected_images, rewarm)
    rates = {name: batch_size / float(np.median(ts)) for name, ts in times.items()}
    chosen = max(rates, key=rates.__getitem__)
    record = Measured(**{**case.__dict__, "chosen": chosen, "images_per_second": rates,
                         "timed_runs": len(times[chosen]), "seconds": time.perf_counter() - t0,
                         "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return models[chosen], record, record.reason(cached=False)


def _try_run(model: Model, x: np.ndarray) -> str | None:
    """Run once (the warm-up); None, or the first line of the engine's error. The model's own output check
    (a ToolError: an unusable model) is raised."""
    try:
        model.run(x)
    except ToolError:
        raise
    except Exception as e:  # the engines raise their own exception types
        return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return None


def _rounds(models: dict[str, Model], x: np.ndarray, t0: float, expected_images: int | None,
            rewarm: Collection[str] = ()) -> dict[str, list]:
    """Seconds per run of each model, MIN_ROUNDS to MAX_ROUNDS alternating rounds, stopping at the budget; one
    round only when opening and warming up already took BASE_SECONDS (a model of seconds per batch). A model in
    `rewarm` gets an untimed run just before each timed one (REWARM_BELOW_SECONDS)."""
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    least = 1 if time.perf_counter() - t0 >= BASE_SECONDS else MIN_ROUNDS
    for r in range(MAX_ROUNDS):
        for name in names if r % 2 == 0 else names[::-1]:
            if name in rewarm:
                models[name].run(x)  # untimed: the other engine's threads were still busy (see REWARM_BELOW_SECONDS)
            start = time.perf_counter()
            models[name].run(x)
            times[name].append(time.perf_counter() - start)
        if r + 1 >= least and time.perf_counter() - t0 >= _budget(times, len(x), expected_images):
            break
    return times


def _budget(times: dict[str, list[float]], batch_size: int, expected_images: int | None) -> float:
    """BASE_SECONDS, or SHARE of the job's expected time at the faster engine's pace so far, when larger."""
    if not expected_images:
        return BASE_SECONDS
    per_image = min(float(np.median(ts)) for ts in times.values()) / batch_size
    return max(BASE_SECONDS, SHARE * expected_images * per_image)


def _cache_path() -> Path | None:
    folder = user_cache_dir()
    return None if folder is None else folder / CACHE_FILE


def _read_cache(say: Note) -> RuntimeCache:
    """The cache's entries; an empty cache (with a note when the file exists but cannot be used)."""
    path = _cache_path()
    if path is None:
        return RuntimeCache(schema=CACHE_SCHEMA)
    try:
        if path.exists() and not path.is_file():  # a FIFO would block the read: never open what is not a file
            raise OSError(f"not a regular file ({file_kind(path.stat().st_mode)})")
        doc = json.loads(path.read_text(encoding="utf-8"))
        cache = RuntimeCache.decode(doc)
        if cache.schema != CACHE_SCHEMA:
            raise ValueError(f"schema {cache.schema!r}, expected {CACHE_SCHEMA!r}")
        return cache
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeError) as e:  # json and json_shape errors are ValueErrors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        say(f"note: ignoring the runtime cache {path} ({first}); measuring again")
    return RuntimeCache(schema=CACHE_SCHEMA)


def _lookup(case: Measured, say: Note) -> Measured | None:
    return next((m for m in reversed(_read_cache(say).entries) if m.same_case(case)
                 and m.chosen in ENGINES and set(m.images_per_second) == set(ENGINES)), None)


def _remember(measured: Measured, say: Note) -> None:
    """Add the measurement to the cache (replacing one of the same case); a note when it cannot be written."""
    cache = _read_cache(lambda _: None)  # already noted by the lookup
    entries = [m for m in cache.entries if not m.same_case(measured)] + [measured]
    cache = RuntimeCache(schema=CACHE_SCHEMA, entries=entries[-MAX_ENTRIES:])
    path = _cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cache.to_dict(), indent=1) + "\n")
    except OSError as e:
        say(f"note: cannot write the runtime cache {path} ({e.strerror or e}); the next run measures again")

