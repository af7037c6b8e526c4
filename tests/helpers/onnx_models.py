"""Small ONNX models with any metadata and any output shape, for the model-opening checks and the fuzz suite.

`conv_model` writes a 1x1 convolution from the 3 input channels to `channels` logits (default: one per
class of `spec`), with the output declared as `output_shape` (default N x channels x H x W, dynamic
N/H/W), and `metadata` (str -> str) as its metadata_props (default: the spec's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from segtrain.contract import ModelSpec, build_spec

DEFAULT_SPEC = build_spec("tiny", "conv1x1", image_size=32)  # background + the 4 default categories


def conv_model(path: Path, spec: ModelSpec = DEFAULT_SPEC, channels: int | None = None,
               output_shape: list | None = None, metadata: dict[str, str] | None = None,
               flatten: bool = False, hide_channels: bool = False, seed: int = 0, log_input: bool = False,
               no_rows: bool = False) -> Path:
    """Write the model.

    `flatten` makes the output 2-D (N x everything), as a broken export might; `hide_channels`
    reshapes the logits to N x -1 x H x W with a computed shape, so the channel count is unknown
    until the model runs; `log_input` takes the log of the input first (NaN logits for a photo darker than the
    mean, finite ones for a bright photo); `no_rows` slices the output to N x C x 0 x W.
    """
    channels = spec.num_classes if channels is None else channels
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (channels, 3, 1, 1)).astype(np.float32)
    b = np.zeros(channels, np.float32)
    b[0] = 1.0  # mostly background, like a real model
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    source = "input"
    nodes = []
    if log_input:
        nodes.append(helper.make_node("Log", ["input"], ["logged"]))
        source = "logged"
    nodes.append(helper.make_node("Conv", [source, "w", "b"],
                                  ["conv" if flatten or hide_channels or no_rows else "logits"]))
    if no_rows:
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("r0", [0]), ("axis2", [2]))]
        nodes.append(helper.make_node("Slice", ["conv", "r0", "r0", "axis2"], ["logits"]))
    if flatten:
        nodes.append(helper.make_node("Flatten", ["conv"], ["logits"], axis=1))
    if hide_channels:
        inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                  (("zero", [0]), ("one", [1]), ("two", [2]), ("four", [4]), ("minus", [-1]))]
        nodes += [helper.make_node("Shape", ["input"], ["dims"]),
                  helper.make_node("Slice", ["dims", "zero", "one"], ["n"]),
                  helper.make_node("Slice", ["dims", "two", "four"], ["hw"]),
                  helper.make_node("Concat", ["n", "minus", "hw"], ["target"], axis=0),
                  helper.make_node("Reshape", ["conv", "target"], ["logits"])]
    shape = output_shape if output_shape is not None else (["N", "M"] if flatten else ["N", channels, "H", "W"])
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (spec.to_metadata() if metadata is None else metadata).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
