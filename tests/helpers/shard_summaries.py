"""Hand-written shard summaries of a sharded `segdeploy batch` (two shards of five inputs), with the output files
they list: the merge-summary tests and the fuzz suite break them on purpose."""

from __future__ import annotations

import json
from pathlib import Path

from segdeploy.infer.batch.shards import shard_of

INPUTS = ["a.png", "b.png", "c.png", "d.png", "sub/e.png"]
N = 2


def shard_docs() -> list[dict]:
    """Two shard summaries as `segdeploy batch --shard K/2` writes them, written out by hand."""
    docs = []
    for k in range(N):
        mine = [key for key in INPUTS if shard_of(key, N) == k]
        images = [{"input": key, "outputs": {"mask": f"{key}.mask.png"}, "size": [4, 6], "tiles": 0,
                   "seconds": {"decode": 0.1, "infer": 0.2, "write": 0.1, "total": 0.4},
                   "class_share": {"background": 0.5, "red": 0.5, "green": 0.0}} for key in mine[1:]]
        failures = [{"input": key, "reason": "not an image"} for key in mine[:1]]
        docs.append({
            "model": {"path": "m.onnx", "sha256": "0" * 64, "arch": "tiny", "encoder": "conv1x1", "precision": None,
                      "classes": ["background", "red", "green"], "input_size": [32, 32]},
            "runtime": {"requested": "auto", "used": "onnxruntime", "reason": "auto: OpenVINO is not installed"},
            "provider": "CPUExecutionProvider", "providers": ["CPUExecutionProvider"],
            "settings": {"batch_size": 4, "runtime": "auto", "threads": None, "workers": 2, "alpha": 0.5,
                         "overwrite": False, "save": ["mask"], "legend": False, "tile": "auto", "tile_overlap": 0.25},
            "memory_budget_mb": 2048, "sources": ["in"], "out_dir": "out", "ground_truth_file": "labels.json",
            "images": images, "failures": failures,
            "totals": {"images_found": len(mine), "processed": len(images), "resumed": 0, "failed": len(failures),
                       "seconds": 10.0, "model_seconds": 1.0, "stage_seconds_summed": {"decode": 0.1, "infer": 1.0},
                       "images_per_second": 0.3, "model_images_per_second": 3.0},
            "ground_truth": {"iou": {"background": 1.0, "red": 0.75, "green": 0.667},
                             "images_scored": len(images), "inputs_without_ground_truth": 0, "problems": [],
                             "confusion_matrix": [[5, 0, 0], [0, 3, 1], [0, 0, 2]]},
            "shard": {"index": k, "count": N, "partition": "blake2b", "inputs_total": len(INPUTS),
                      "inputs_sha256": "f" * 64, "started_at": 100.0 + k, "finished_at": 110.0 + k},
        })
    return docs


def write(out: Path, docs: list[dict]) -> Path:
    """The summaries in `out`, with the output files they list (merge-summary checks those are there)."""
    out.mkdir(exist_ok=True)
    for k, doc in enumerate(docs):
        (out / f"summary.shard-{k}-of-{N}.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
        for image in doc.get("images", []) if isinstance(doc, dict) and isinstance(doc.get("images"), list) else []:
            for rel in (image.get("outputs") or {}).values() if isinstance(image, dict) else []:
                if isinstance(rel, str) and rel and ".." not in rel and not rel.startswith("/"):
                    try:  # a name the file system cannot hold ("", ".", NUL) is left for merge-summary to refuse
                        (out / rel).parent.mkdir(parents=True, exist_ok=True)
                        (out / rel).write_bytes(b"")
                    except (OSError, ValueError):
                        pass
    return out
