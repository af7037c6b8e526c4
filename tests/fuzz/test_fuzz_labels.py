"""Fuzz: broken labels.json structures and hostile file names through `segtrain data`, `segdeploy evaluate` and
`batch --gt`'s ground truth: exit 0 or 2 with one-line messages, never a traceback, never a file outside the dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fuzzing import assert_ended_well, budget
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
               | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
SECRET = "secret.png"
HOSTILE_NAMES = ["a.png", "b.jpg", "sub/c.png", "../secret.png", "../../secret.png", "/ABS/secret.png",
                 "out-link.png", "dir-link/secret.png", "loop.png", "pipe.png", "", ".", "..", "/", "a.png/..",
                 "nul\x00.png", "\udc80.png", "\ud800.png", "new\nline.png", "missing.png", "sub", "sub/../a.png"]
FILE_NAMES = st.sampled_from(HOSTILE_NAMES) | st.text(max_size=16)
NUMBERS = st.sampled_from([0, -1, 1, 2**31, 2**64, 10**400, 0.5, float("nan"), float("inf"), True, "7", None])
POLYGON_VALUES = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40) | st.just(1e9)


def base_labels() -> dict:
    images = [{"id": 1, "file_name": "a.png", "height": 12, "width": 16},
              {"id": 2, "file_name": "b.jpg", "height": 12, "width": 16},
              {"id": 3, "file_name": "sub/c.png", "height": 12, "width": 16}]
    anns = [{"id": 10, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 6], "iscrowd": 0,
             "segmentation": [[1, 1, 9, 1, 9, 7, 1, 7]]},
            {"id": 11, "image_id": 2, "category_id": 17, "bbox": [0, 0, 16, 12], "iscrowd": 1,
             "segmentation": {"size": [12, 16], "counts": [0, 96, 96]}},
            {"id": 12, "image_id": 3, "category_id": 84, "bbox": [2, 2, 4, 4], "iscrowd": 0,
             "segmentation": {"size": [12, 16], "counts": "0P4"}}]
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 37, "name": "sports ball"},
                           {"id": 84, "name": "book"}]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset root with a validation split whose labels.json each example rewrites, a secret image outside it)."""
    base = tmp_path_factory.mktemp("fuzz-labels")
    secret = base / SECRET
    Image.new("RGB", (16, 12), (255, 0, 0)).save(secret)
    root = base / "ds"
    data = root / "validation" / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.new("RGB", (16, 12), (20, 20, 20)).save(data / name)
    (data / "out-link.png").symlink_to(secret)
    (data / "dir-link").symlink_to(base, target_is_directory=True)
    (data / "loop.png").symlink_to(data / "loop.png")
    os.mkfifo(data / "pipe.png")
    return root, secret


def all_slots(doc: object, out: list | None = None) -> list[tuple[object, object]]:
    """Every (container, key or index) in a JSON document."""
    out = [] if out is None else out
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        out.append((doc, key))
        all_slots(value, out)
    return out


@st.composite
def broken_labels(draw: st.DrawFn, secret: str) -> object:
    """A valid labels.json with a few random changes, or now and then any JSON value at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    doc = base_labels()
    for _ in range(draw(st.integers(1, 4))):
        container, key = draw(st.sampled_from(all_slots(doc)))
        action = draw(st.sampled_from(["value", "delete", "file_name", "number", "polygon", "copy"]))
        if action == "delete" and isinstance(container, dict):
            del container[key]
        elif action == "file_name":
            name = draw(FILE_NAMES)
            container[key] = name.replace("/ABS/secret.png", secret)
        elif action == "number":
            container[key] = draw(NUMBERS)
        elif action == "polygon":
            container[key] = [draw(st.lists(POLYGON_VALUES, min_size=0, max_size=10))]
        elif action == "copy" and isinstance(container, list) and container:
            container.append(json.loads(json.dumps(container[0])))  # a duplicate id, among others
        else:
            container[key] = draw(JSON_VALUES)
    return doc


def write_labels(root: Path, doc: object) -> None:
    text = json.dumps(doc, allow_nan=True)
    (root / "validation" / "labels.json").write_text(text, encoding="utf-8", errors="surrogatepass")


@given(data=st.data())
@budget(60)
def test_segtrain_data_on_broken_labels(dataset, opened_images, data) -> None:
    from segtrain.cli import main

    root, secret = dataset
    write_labels(root, data.draw(broken_labels(str(secret))))
    opened_images.clear()
    result = CliRunner().invoke(main, ["data", str(root)])
    assert_ended_well(result, allowed=(0, 2))
    inside = (root / "validation" / "data").resolve()
    outside = [p for p in opened_images if not p.is_relative_to(inside)]
    assert not outside, outside


@given(data=st.data())
@budget(25)
def test_segdeploy_evaluate_and_ground_truth_on_broken_labels(dataset, opened_images, data,
                                                              tmp_path_factory) -> None:
    from onnx_models import conv_model

    from segdeploy.cli import main
    from segdeploy.infer.batch.ground_truth import GroundTruth
    from segdeploy.infer.runtime import OnnxModel
    from segtrain.common.errors import InputError

    root, secret = dataset
    model = tmp_path_factory.getbasetemp() / "fuzz-labels-model.onnx"
    if not model.exists():
        conv_model(model)
    write_labels(root, data.draw(broken_labels(str(secret))))
    opened_images.clear()
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(root), "--split", "validation",
                                       "--provider", "cpu", "--json"])
    assert_ended_well(result, allowed=(0, 2))
    if result.exit_code == 0:
        doc = json.loads(result.stdout)
        assert doc["images_scored"] + len(doc["images_skipped"]) >= 1
    try:  # batch --gt reads labels.json through the same CocoSplit, with INPUT_DIR as the image folder
        truth = GroundTruth(root / "validation" / "labels.json", root / "validation" / "data",
                            OnnxModel(model, "cpu").spec)
    except InputError:
        pass  # refused, with the message the CLI prints in one line
    else:
        for key in list(truth._index):
            truth.update(key, np.zeros((12, 16), np.uint8))
    inside = (root / "validation" / "data").resolve()
    outside = [p for p in opened_images if not p.is_relative_to(inside)]
    assert not outside, outside
