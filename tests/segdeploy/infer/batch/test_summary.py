"""summary.json through its type: what a run writes reads back as the same summary, section by section, with
its keys in the order users see them; the totals' arithmetic; ground-truth sections that combine exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from colour_models import half_image, half_truth, save

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.ground_truth import GroundTruthReport
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.batch.shards import Shard
from segdeploy.infer.batch.summary import BatchSummary, ImageRecord, Totals
from segtrain.common.json_shape import ShapeError
from segtrain.data.synthetic import rle_encode
from segtrain.metrics import ConfusionMatrix


def _photos_and_labels(root: Path) -> Path:
    images, annotations = [], []
    for i, (h, w) in enumerate([(20, 24), (30, 26)]):
        save(half_image(h, w, 1), root / "in" / f"p{i}.png")
        truth = half_truth(h, w, 1)
        images.append({"id": i + 1, "file_name": f"p{i}.png", "height": h, "width": w})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": rle_encode(truth),
                            "area": float(truth.sum()), "bbox": [0.0, 0.0, float(w), float(h)], "iscrowd": 0})
    (root / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    labels = root / "labels.json"
    labels.write_text(json.dumps({"images": images, "annotations": annotations,
                                  "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return labels


def test_a_shard_summary_reads_back_as_it_was_written(model: Path, tmp_path: Path) -> None:
    labels = _photos_and_labels(tmp_path)
    config = BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "out", model=model, gt=labels, workers=2,
                         progress=False, save=("mask", "rle"), shard=Shard(0, 1))
    result = run_batch(config, log=lambda m: None)
    written = json.loads(result.path.read_text())
    assert result.path.name == "summary.shard-0-of-1.json"
    assert BatchSummary.read(result.path, of_shard=True).to_dict() == written == result.summary.to_dict()
    assert list(written) == ["model", "runtime", "provider", "providers", "settings", "memory_budget_mb", "sources",
                             "out_dir", "ground_truth_file", "images", "failures", "totals", "ground_truth", "shard"]
    assert list(written["images"][0]) == ["input", "outputs", "size", "tiles", "seconds", "class_share", "scores"]
    assert written["failures"] == [{"input": "broken.jpg", "reason": "not an image Pillow can identify"}]
    assert list(written["settings"]) == ["batch_size", "runtime", "threads", "workers", "alpha", "overwrite", "save",
                                         "legend", "tile", "tile_overlap", "tta", "engine", "actors"]
    assert written["ground_truth"]["images_scored"] == 2 and written["ground_truth"]["miou"] == 1.0
    again = run_batch(config, log=lambda m: None)  # every image resumed from its mask's record
    records = again.summary.to_dict()["images"]
    assert [r.pop("resumed") for r in records] == [True, True]
    # a resumed image took no time in this run: its outputs carry no timings (they would change their bytes)
    assert [{**r, "seconds": None} for r in records] == [{**r, "seconds": None} for r in written["images"]]
    assert [r["seconds"] for r in records] == [{}, {}]


def test_a_summary_without_a_shard_section_is_not_a_shards(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 24, 1), tmp_path / "in" / "a.png")
    result = run_batch(BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "out", model=model, workers=1,
                                   progress=False), log=lambda m: None)
    assert "shard" not in json.loads(result.path.read_text()) and BatchSummary.read(result.path).shard is None
    with pytest.raises(ShapeError, match=r"^shard: missing \(expected an object\)$"):
        BatchSummary.read(result.path, of_shard=True)


def _record(name: str, decode: float, infer: float, write: float) -> ImageRecord:
    return ImageRecord(name, {"mask": f"{name}.mask.png"}, (4, 4), 0,
                       {"decode": decode, "infer": infer, "write": write, "total": decode + infer + write},
                       {"background": 1.0})


def test_totals_sum_the_stages_of_the_images_processed_in_this_run() -> None:
    totals = Totals.of_run(found=5, resumed=1, failed=1, wall_seconds=2.00049,
                           processed=[_record("a", 0.1, 0.5, 0.2), _record("b", 0.3, 0.25, 0.1), _record("c", 0, 0, 0)])
    assert totals == Totals(images_found=5, processed=3, resumed=1, failed=1, seconds=2.0, model_seconds=0.75,
                            stage_seconds_summed={"decode": 0.4, "infer": 0.75, "write": 0.3},
                            images_per_second=round(3 / 2.00049, 3), model_images_per_second=4.0)
    assert Totals.from_dict(totals.to_dict()) == totals
    idle = Totals.of_run(found=2, resumed=2, failed=0, wall_seconds=0.5, processed=[])
    assert idle.images_per_second is None and idle.model_images_per_second is None and idle.processed == 0


def test_ground_truth_sections_of_shards_combine_to_the_scores_of_all_images() -> None:
    rng = np.random.default_rng(0)
    classes = ("background", "red", "green")
    parts = []
    for n in (40, 60):
        truth, pred = rng.integers(0, 3, n), rng.integers(0, 3, n)
        cm = ConfusionMatrix(3)
        cm.update(truth, pred)
        parts.append((truth, pred, GroundTruthReport(classes, cm.mat.copy(), n // 10, 1, ("labels.json: x", f"{n}"))))
    combined = GroundTruthReport.combine([r for _, _, r in parts])
    whole = ConfusionMatrix(3)
    whole.update(np.concatenate([t for t, _, _ in parts]), np.concatenate([p for _, p, _ in parts]))
    assert combined.metrics == whole.result(classes) and (combined.confusion == whole.mat).all()
    assert (combined.scored, combined.without_truth) == (10, 2)
    assert combined.problems == ("labels.json: x", "40", "60")
    doc = combined.to_dict()
    assert GroundTruthReport.from_dict(doc).to_dict() == doc
    with pytest.raises(ShapeError, match=r"^confusion_matrix: expected a 2x2 matrix"):
        GroundTruthReport.from_dict({**doc, "iou": dict(list(doc["iou"].items())[:2])})
