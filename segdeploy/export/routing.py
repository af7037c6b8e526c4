"""Parity for max-unpooling models: PyTorch re-run with onnxruntime's max-pool choices.

SegNet's decoder puts each value back where the encoder's max-pool found it. Where two values
in a pooling window are within float32 rounding of each other, PyTorch (oneDNN) and
onnxruntime (MLAS) may pick different winners, and the logits downstream of that window then
differ by far more than 1e-4 (a trained SegNet at 128 px: 2.5e-2 at a few hundred of 10^6
logits, mean 1.5e-6; PyTorch float32 against PyTorch float64 shows the same). That is float32
behaviour, not an export error, and it hides real errors behind it.

So the max |logit difference| bar is checked with the routing held equal: onnxruntime runs a
copy of the model that also outputs each max-pool's indices, and PyTorch is re-run with every
``nn.MaxPool2d(return_indices=True)`` taking the values at those indices. What remains is the
conversion's own error. The unmatched numbers (agreement, mIoU, raw max |diff|) are reported
beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pool_index_outputs(proto: Any) -> list[str]:
    """The Indices outputs of the graph's real (kernel > 1) MaxPool nodes, in graph order."""
    names = []
    for node in proto.graph.node:
        if node.op_type != "MaxPool" or len(node.output) < 2 or not node.output[1]:
            continue
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        if any(k > 1 for k in kernel):  # 1x1 "pools" are the exporter's index-offset helpers
            names.append(node.output[1])
    return names


def routing_pools(model: Any) -> list[Any]:
    """The model's index-returning max-pools, in forward (module registration) order."""
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d) and m.return_indices]


class RoutedComparer:
    """Max |logit diff| between onnxruntime and PyTorch forced onto onnxruntime's pooling choices."""

    def __init__(self, model: Any, onnx_path: Path, pools: list[Any], index_names: list[str]) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(onnx_path))
        for name in index_names:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, None))
        self.session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        self.input_name = proto.graph.input[0].name
        self.model, self.pools = model, pools
        self.max_diff = 0.0

    @classmethod
    def create(cls, model: Any, onnx_path: Path) -> RoutedComparer | None:
        """None when the model has no index-returning pools (its outputs do not depend on near-ties)."""
        import onnx

        pools = routing_pools(model)
        if not pools:
            return None
        names = pool_index_outputs(onnx.load(str(onnx_path), load_external_data=False))
        if len(names) != len(pools):
            raise RuntimeError(f"{onnx_path}: {len(names)} max-pools with indices in the graph, "
                               f"{len(pools)} in the PyTorch model")
        return cls(model, onnx_path, pools, names)

    def __call__(self, x: np.ndarray) -> None:
        import torch

        logits, *indices = self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})
        handles = [pool.register_forward_hook(_take_at(torch.from_numpy(idx))) for pool, idx in
                   zip(self.pools, indices, strict=True)]
        try:
            with torch.inference_mode():
                routed = self.model(torch.from_numpy(x)).float().numpy()
        finally:
            for h in handles:
                h.remove()
        self.max_diff = max(self.max_diff, float(np.abs(routed.astype(np.float64) - logits).max()))


def _take_at(onnx_indices: Any):
    """A forward hook replacing a pool's (values, indices) by the input's values at onnxruntime's indices."""

    def hook(module: Any, args: tuple, output: tuple) -> tuple:
        x = args[0]
        plane = x.shape[-2] * x.shape[-1]
        idx = onnx_indices % plane  # ONNX flattens over N*C*H*W; PyTorch within each H*W plane
        values = x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)
        return values, idx

    return hook
