"""`segdeploy batch --save rle`: predictions.json, each image's mask per class in the COCO results format
(README), in mask.png's grid, or with --gt or --image-ids in the pixel grid labels.json describes (torch-free).

Every region is an entry, background (category_id 0) included, as in COCO-Stuff's results: an image's entries
cover each of its pixels once, so a scorer rebuilds the whole mask (score.py), and a run whose masks are all
background still gives a list pycocotools can load (it fails on an empty one). COCOeval leaves category 0 out,
since no labels.json category has that id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from segdeploy.infer.batch.outputs import write_atomic
from segdeploy.infer.batch.shards import Shard, run_file_name
from segdeploy.infer.storage import location
from segtrain.common.files import json_text
from segtrain.common.json_shape import Anything, Integer, ListOf, Number, Record, String
from segtrain.contract import ModelSpec

PREDICTIONS = "predictions"  # OUT/predictions.json; a shard's is predictions.shard-K-of-N.json
# An entry as rle_entries writes it (its image id: labels.json's, or the image's key), as merge-summary reads it.
RESULT_ENTRY = Record({"image_id": Anything(), "category_id": Integer(lo=0),
                       "segmentation": Record({"size": ListOf(Integer(lo=1), length=2), "counts": String()})},
                      optional={"score": Number()}, expected="a COCO result with a compressed-RLE segmentation")


def predictions_name(shard: Shard | None = None) -> str:
    return run_file_name(PREDICTIONS, shard)


def rle_entries(mask: np.ndarray, scores: dict[int, float], spec: ModelSpec, image_id: int | str) -> list[dict]:
    """COCO result entries for each class in `mask` (background too); `scores` by class index."""
    classes = [k for k in sorted(scores) if 0 <= k < spec.num_classes]
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
    path = location(out_dir) / predictions_name(shard)
    write_atomic(path, json_text(sort_entries(entries), separators=(",", ":")).encode("utf-8"))
    return path
