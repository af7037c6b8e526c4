"""A trained model as an ONNX graph: the dynamo trace and the graph fixes after it (torch at call time).

Exporter: ``torch.onnx.export(dynamo=True)`` for both models. The legacy TorchScript exporter
cannot export SegNet's max-unpooling; for DeepLabV3 both exporters give the same onnxruntime
speed, so one path serves both. Batch, height and width are dynamic; height and width are
declared as multiples of the model's input divisor (8 for DeepLabV3's output stride, 32 for
SegNet's five pools), which is what lets torch.export prove the decoder's shapes.
"""

from __future__ import annotations

import logging
from typing import Any

DEFAULT_OPSET = 20  # what torch's dynamo exporter targets; onnxruntime >= 1.17 runs it on every provider
# The opsets torch's dynamo exporter implements (torch.onnx's TORCHLIB_OPSET .. ONNX_MAX_OPSET): asked for
# less, it converts down when it can and otherwise silently keeps 18.
MIN_OPSET, MAX_OPSET = 18, 23
MAX_BATCH_SIZE = 4096  # the exported graphs' dynamic batch dimension goes up to this
TRACE_BLOCKS = (2, 3)  # trace input = divisor x these: verification uses other sizes and batches
# The trace's batch: not 1, which torch.export specialises ("0/1 specialisation": SegFormer's Mix Transformer then
# exports with a batch fixed at 1), and not the verification's default batch (2).
TRACE_BATCH = 4
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def trace_size(divisor: int) -> tuple[int, int]:
    """(height, width) of the trace input for a model whose sides must be multiples of `divisor`."""
    return divisor * TRACE_BLOCKS[0], divisor * TRACE_BLOCKS[1]


def to_onnx(model: Any, divisor: int, opset: int = DEFAULT_OPSET) -> Any:
    """The eval-mode model as an onnx.ModelProto with dynamic batch, height and width."""
    import torch
    from torch.export import Dim

    model = model.eval()
    trace = torch.zeros(TRACE_BATCH, 3, *trace_size(divisor))
    dims = {0: Dim("batch", min=1, max=MAX_BATCH_SIZE),
            2: divisor * Dim("height_blocks", min=1, max=(1 << 15) // divisor),
            3: divisor * Dim("width_blocks", min=1, max=(1 << 15) // divisor)}
    quiet = logging.getLogger("onnx_ir")  # "Attribute type is ambiguous" chatter on empty attribute lists
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(model, (trace,), dynamo=True, verbose=False, opset_version=opset,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes={"x": dims}, optimize=True)
    finally:
        quiet.setLevel(level)
    proto = _shapes_after_batchnorm(program.model_proto)
    _name_dynamic_axes(proto)
    for node in proto.graph.node:  # per-node stack traces and FX dumps: bulk, and local file paths
        del node.metadata_props[:]
        node.doc_string = ""
    return proto


def _shapes_after_batchnorm(proto: Any) -> Any:
    """Let Shape nodes read a BatchNormalization's output rather than its input (same shape).

    The exporter sometimes takes a size from a convolution's output that then feeds a BN; that
    second consumer stops onnxruntime (and quant_pre_process) from folding the BN into the conv.
    """
    import onnx_ir

    bn_output = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "BatchNormalization"}
    moved = False
    for node in proto.graph.node:
        if node.op_type == "Shape" and node.input[0] in bn_output:
            node.input[0] = bn_output[node.input[0]]
            moved = True
    if not moved:
        return proto
    model = onnx_ir.from_proto(proto)
    model.graph.sort()
    return onnx_ir.to_proto(model)


def _name_dynamic_axes(proto: Any) -> None:
    """Call the input's symbolic axes batch/height/width everywhere they appear (not '32*height_blocks')."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    rename = {dims[i].dim_param: name for i, name in ((0, "batch"), (2, "height"), (3, "width")) if dims[i].dim_param}
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
