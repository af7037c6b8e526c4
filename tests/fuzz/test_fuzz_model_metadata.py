"""Fuzz: ONNX models with broken metadata values or outputs through `segdeploy info` and `segdeploy evaluate`:
exit 0 or 2 with a one-line message, never a traceback; a model that runs gives masks of its own classes only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzzing import assert_ended_well, budget
from hypothesis import given
from hypothesis import strategies as st
from onnx_models import DEFAULT_SPEC, conv_model
from PIL import Image

NUMBERS = st.sampled_from([0, 1, -1, 0.5, 255, 256, 999, 10**6, 2**63, float("nan"), float("inf"), True, "abc", None])
SMALL_LISTS = st.lists(NUMBERS, max_size=4)
VALUES = {
    "arch": st.sampled_from(["tiny", "", 5, None]),
    "encoder": st.sampled_from(["conv1x1", "", ["x"]]),
    "classes": st.sampled_from([list(DEFAULT_SPEC.classes), ["background"], [], "background",
                                [f"c{i}" for i in range(300)], ["background", 5, "cat", "x", "y"],
                                ["background", "", "cat", "x", "y"]]) | st.lists(st.text(max_size=4), max_size=6),
    "coco_ids": st.sampled_from([list(DEFAULT_SPEC.coco_ids), [0, 1, 2, 3, -4], list(range(300))]) | SMALL_LISTS,
    "input_size": st.sampled_from([[0, 0], [-1, 5], [100000, 100000], [9000, 1], "x", [1.5, 2], [True, 2], [],
                                   [1, 2, 3]]) | st.lists(st.integers(1, 48), min_size=2, max_size=2),
    "mean": SMALL_LISTS | st.sampled_from(["abc", [0.4, 0.4, 0.4]]),
    "std": SMALL_LISTS | st.sampled_from([[0, 1, 1], [0.2, 0.2, 0.2]]),
    "palette": st.lists(st.lists(st.integers(-5, 300), max_size=4), max_size=6)
               | st.sampled_from([[[999, 0, 0]] * 5, [], "red"]),
    "resize": st.sampled_from(["stretch", "letterbox", 1, None]),
    "ignore_index": st.sampled_from([255, 3, 0, -1, 256, "255", None]),
}
RAW = st.sampled_from(["", "not json", "[", "NaN", "[" * 5000 + "]" * 5000, "{\"a\": 1}"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test split of two 16x12 images with the default target categories."""
    root = tmp_path_factory.mktemp("fuzz-models") / "ds"
    (root / "test" / "data").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (16, 12), (40 * i, 90, 200)).save(root / "test" / "data" / f"{i}.png")
    labels = {"images": [{"id": i, "file_name": f"{i}.png", "height": 12, "width": 16} for i in range(2)],
              "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 1, 5, 5],
                               "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]}],
              "categories": [{"id": c, "name": n} for c, n in zip(DEFAULT_SPEC.coco_ids[1:], DEFAULT_SPEC.classes[1:],
                                                                  strict=True)]}
    (root / "test" / "labels.json").write_text(json.dumps(labels))
    return root


@st.composite
def models(draw: st.DrawFn) -> dict:
    props = DEFAULT_SPEC.to_metadata()
    for key in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True)):
        name = f"segtrain.{key}"
        how = draw(st.sampled_from(["value", "value", "delete", "raw"]))
        if how == "delete":
            del props[name]
        elif how == "raw":
            props[name] = draw(RAW)
        else:
            props[name] = json.dumps(draw(VALUES[key]))
    graph = draw(st.sampled_from([{}, {}, {"channels": 7}, {"channels": 1}, {"flatten": True},
                                  {"channels": 7, "hide_channels": True}, {"hide_channels": True}]))
    return {"metadata": props, **graph}


@given(model=models())
@budget(40)
def test_info_and_evaluate_on_broken_models(dataset: Path, tmp_path_factory, model: dict) -> None:
    from segdeploy.cli import main

    path = conv_model(tmp_path_factory.getbasetemp() / "fuzz-model.onnx", **model)
    runner = CliRunner()
    info = runner.invoke(main, ["info", str(path), "--json"])
    assert_ended_well(info, allowed=(0, 2))
    result = runner.invoke(main, ["evaluate", str(path), "--data", str(dataset), "--split", "test", "--json",
                                  "--provider", "cpu"])
    assert_ended_well(result, allowed=(0, 2))
    if result.exit_code == 0:  # the model was accepted: its masks can only hold its classes
        doc = json.loads(result.stdout)
        spec = json.loads(info.stdout)["spec"]
        assert list(doc["iou"]) == spec["classes"] and doc["images_scored"] == 2
