"""`segdeploy batch --save rle`: predictions.json, the masks in the COCO results format (torch-free).

One entry per image and predicted class (background, class 0, is left out)::

    {"image_id": <the image's id in --gt's labels.json; else its path relative to its folder>,
     "category_id": <the class's COCO id, from the model spec>,
     "segmentation": {"size": [height, width], "counts": "<compressed COCO RLE>"},
     "score": <the mean softmax probability of the class over the pixels predicted as it>}

`pycocotools.coco.COCO.loadRes` reads it (so do COCO evaluation and annotation tools that import COCO
results), and `pycocotools.mask.decode` gives back exactly the pixels of mask.png == class. The
masks are in mask.png's grid (EXIF orientation applied), except that with --gt an image whose
labels.json describes the file's stored pixel grid is turned back to that grid, as the labels are.
The file is written atomically when a run ends (a shard writes predictions.shard-K-of-N.json, and
`segdeploy merge-summary` joins the shards' files into predictions.json).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from segdeploy.infer.batch.outputs import write_atomic
from segdeploy.infer.batch.shards import Shard, run_file_name
from segtrain.common.files import json_text
from segtrain.contract import ModelSpec

PREDICTIONS = "predictions"  # OUT/predictions.json; a shard's is predictions.shard-K-of-N.json


def predictions_name(shard: Shard | None = None) -> str:
    return run_file_name(PREDICTIONS, shard)


def rle_entries(mask: np.ndarray, scores: dict[int, float], spec: ModelSpec, image_id: int | str) -> list[dict]:
    """COCO result entries for each non-background class in `mask`; `scores` by class index."""
    classes = [k for k in sorted(scores) if 0 < k < spec.num_classes]
    if not classes:
        return []
    # One class at a time: a few bytes per pixel whatever the number of classes present.
    rles = [mask_utils.encode(np.asfortranarray((mask == k).view(np.uint8)[..., None]))[0] for k in classes]
    return [{"image_id": image_id, "category_id": spec.coco_ids[k],
             "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
             "score": round(float(scores[k]), 6)} for k, rle in zip(classes, rles, strict=True)]


def sort_entries(entries: list[dict]) -> list[dict]:
    return sorted(entries, key=lambda e: (str(e["image_id"]), e["category_id"]))


def write_predictions(out_dir: Path, entries: list[dict], shard: Shard | None = None) -> Path:
    """Write the entries (sorted by image and category) atomically as OUT/predictions.json (or a shard's file)."""
    path = Path(out_dir) / predictions_name(shard)
    write_atomic(path, json_text(sort_entries(entries), separators=(",", ":")).encode("utf-8"))
    return path
