"""What an exported model is: its spec, provenance, inputs/outputs and opset (torch-free)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from segdeploy.infer.runtime import load_graph, read_model_metadata
from segtrain.common.errors import printable


def _io(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({"name": v.name, "type": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    "shape": [d.dim_param or d.dim_value for d in t.shape.dim]})
    return out


def _used_opsets(model) -> dict[str, int]:
    """Opset per domain, for the domains the graph's nodes use (tools add unused imports)."""
    used = {n.domain or "ai.onnx" for n in model.graph.node}
    return {(o.domain or "ai.onnx"): o.version for o in model.opset_import if (o.domain or "ai.onnx") in used}


def describe(path: str | Path) -> dict:
    """Spec, provenance, graph inputs/outputs, opsets and producer of an ONNX model file."""
    path = Path(path)
    model = load_graph(path)
    meta = read_model_metadata(path, model)
    provenance = {k: v for k, v in dataclasses.asdict(meta.provenance).items() if v is not None}
    return {"path": str(path), "size_bytes": path.stat().st_size, "spec": meta.spec.to_dict(), "provenance": provenance,
            "inputs": _io(model.graph.input), "outputs": _io(model.graph.output),
            "opset": _used_opsets(model),
            "producer": f"{model.producer_name} {model.producer_version}".strip(), "ir_version": model.ir_version}


def format_info(info: dict) -> str:
    """The description as a short human-readable page."""
    spec, prov = info["spec"], info["provenance"]
    opsets = ", ".join(f"{d} {v}" for d, v in info["opset"].items())
    lines = [f"{info['path']}  ({info['size_bytes'] / 2**20:.1f} MiB; opset {opsets}; producer {info['producer']})",
             f"model        {spec['arch']} / {spec['encoder']}, {prov.get('precision', 'unknown precision')}",
             "classes      index  name  (COCO id)  colour"]
    for i, (name, cid, colour) in enumerate(zip(spec["classes"], spec["coco_ids"], spec["palette"], strict=False)):
        lines.append(f"             {i:>5}  {name}  ({cid})  {tuple(colour)}")
    h, w = spec["input_size"]
    lines += [f"input size   {h}x{w} (height x width), resize rule: {spec['resize']}",
              f"mean / std   {', '.join(f'{m:g}' for m in spec['mean'])} / {', '.join(f'{s:g}' for s in spec['std'])}",
              f"ignore index {spec['ignore_index']}"]
    if prov:
        miou = prov.get("val_miou")
        lines.append(f"trained      epoch {prov.get('epoch')}, validation mIoU "
                     f"{'n/a' if miou is None else f'{100 * miou:.2f}%'}")
        lines.append(f"checkpoint   {prov.get('checkpoint')} sha256 {prov.get('checkpoint_sha256')}")
        if "exporter" in prov:
            lines.append(f"exporter     {prov['exporter']}")
        if "quantization" in prov:
            lines.append(f"quantization {json.dumps(prov['quantization'])}")
    for label, items in (("inputs", info["inputs"]), ("outputs", info["outputs"])):
        for j, v in enumerate(items):
            lines.append(f"{label if j == 0 else '':<12} {v['name']}  {v['type']}  [{', '.join(map(str, v['shape']))}]")
    return "\n".join(map(printable, lines))  # names, producer, paths: text from the file, shown terminal-safe
