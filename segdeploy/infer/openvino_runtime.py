"""OpenVINO as the second runtime behind `segdeploy.infer.runtime.open_model` (torch-free; the `openvino` extra,
imported when a model is opened with it). It runs the same .onnx files, the QDQ INT8 one with int8 kernels.

Settings, and why: the CPU device; float32 for the layers that are not quantized (with bfloat16 units OpenVINO
would run them in bf16 and FP32 masks would no longer match onnxruntime's); the latency hint (one stream, every
thread on one request); `threads` as INFERENCE_NUM_THREADS; with fewer threads than the usable cores, no thread
pinning (ENABLE_CPU_PINNING off): the other cores are then for other processes, and OpenVINO pins each process to
the same first cores (two Ray actors of one thread each on two cores ran at half speed, see PINNING_NOTE).
Dynamic shapes stay dynamic: the plugin compiles a kernel set per input shape on first sight and reuses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segdeploy.infer.model_file import ModelLoadError, check_graph_io, check_logits, read_model_metadata
from segtrain.common.errors import whole_message
from segtrain.common.extras import MissingExtraError, missing_extra
from segtrain.common.system import usable_cores

DEVICE = "CPU"
CPU_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # the module docstring says why


# PINNING_NOTE: `segdeploy batch --engine ray` on 2 cores runs 2 actors of 1 thread each. Pinned, both ran on one
# core: Ray 0.553x the local run's images/s over 256 photos (benchmarks/past_one_machine.py); unpinned, 0.807x
# there and 0.951x over 1024 photos (benchmarks/results/past_one_machine*.json, 2026-12-06).


def import_openvino():
    """The openvino module, or a MissingExtraError naming the extra to install."""
    try:
        import openvino
    except ImportError as e:
        raise (missing_extra(e, "--runtime openvino") or MissingExtraError(
            f"--runtime openvino: OpenVINO cannot be imported ({e})")) from e
    return openvino


def openvino_version() -> str:
    return import_openvino().__version__.split("-")[0]


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Put the calling thread's alternate signal stack back after OpenVINO ran.

    OpenVINO's CPU plugin swaps in a signal stack of its own (11568 bytes) when it compiles or runs a model and
    leaves it there. Python's signal handlers (Ctrl-C, SIGTERM, torch's SIGCHLD) run on that stack, and once the
    plugin frees it the next signal kills the process with SIGSEGV (seen: a Ctrl-C, and a subprocess's exit,
    after `--runtime auto` had measured OpenVINO). Linux only, where the call exists; elsewhere a no-op.
    """
    libc = _libc()
    old = _SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(old)) != 0:
        yield
        return
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(old), None)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class OpenVinoModel:
    """One compiled OpenVINO model plus the spec that says how to feed it (the OnnxModel interface)."""

    runtime = "openvino"
    runtime_reason = "--runtime openvino"  # open_model says why when it chose

    def __init__(self, path: str | Path, threads: int | None = None, properties: dict | None = None) -> None:
        """`properties`: more OpenVINO CPU properties (e.g. {"PERF_COUNT": True} for a profile)."""
        ov = import_openvino()
        self.path = Path(path)
        meta = read_model_metadata(self.path)
        self.spec, self.provenance, self.metadata = meta.spec, meta.provenance, meta.props
        config = dict(CPU_CONFIG)
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
            if int(threads) < usable_cores():
                config["ENABLE_CPU_PINNING"] = False  # PINNING_NOTE
        config.update(properties or {})
        t0 = time.perf_counter()
        try:
            with signal_stack_kept():
                core = ov.Core()
                self.compiled = core.compile_model(core.read_model(str(self.path)), DEVICE, config)
        except Exception as e:  # OpenVINO raises RuntimeError with the converter's log
            raise ModelLoadError(f"{self.path}: OpenVINO cannot load it ({whole_message(e)})") from e
        self.session_seconds = time.perf_counter() - t0
        output = self.compiled.output(0)
        check_graph_io(self.path, self.spec, [_dims(i.get_partial_shape()) for i in self.compiled.inputs],
                       _dims(output.get_partial_shape()), _ONNX_TYPES.get(output.get_element_type().get_type_name(),
                                                                          str(output.get_element_type())))
        self._output_checked = False
        self.input_name = self.compiled.input(0).any_name
        self.output_name = self.compiled.output(0).any_name
        self._output = self.compiled.output(0)
        self._local = threading.local()  # an infer request serves one call at a time: one per thread

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO {DEVICE}"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW (already preprocessed) -> float32 logits NxCxhxw."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        with signal_stack_kept():
            out = request.infer({0: np.ascontiguousarray(batch, np.float32)})[self._output]
        if not self._output_checked:
            check_logits(self.path, self.spec, batch, out)
            self._output_checked = True
        return np.asarray(out, dtype=np.float32)


# OpenVINO element type names -> the ONNX type strings check_graph_io reads.
_ONNX_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "f64": "tensor(double)"}


def _dims(shape) -> list:
    """A partial shape as check_graph_io reads it: an int per fixed dimension, None per dynamic one."""
    if shape.rank.is_dynamic:
        return []
    return [d.get_length() if d.is_static else None for d in shape]
