"""Fuzz the surfaces of the second hardening round: the bounded reader (config files, JSON, YAML, environment
values), the Predictor's arguments and streams, and merge-summary's inputs. Each ends in a result or a one-line
named refusal: never a traceback, a hang or an unbounded allocation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import build_colour_model
from fuzzing import assert_ended_well, budget
from hypothesis import given
from hypothesis import strategies as st
from json_edit import edit
from shard_summaries import shard_docs, write

from segdeploy.cli import main as segdeploy
from segdeploy.infer.pipeline import Failure
from segdeploy.infer.predictor import Prediction, Predictor
from segtrain.common.errors import InputError
from segtrain.common.limits import MAX_NESTING, MAX_STRING_CHARS
from segtrain.common.outside_text import OutsideTextError, env_value, parse_json, parse_yaml
from segtrain.common.settings import THREADS

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20)
YAML_PIECES = st.sampled_from([
    "a: &x [1, 2]\n", "b: *x\n", "c: [*x, *x]\n", "d: &y {k: *x}\n", "- *y\n", "e: !!python/name:os.system\n",
    "f: " + "[" * 70 + "]" * 70 + "\n", "g: '" + "z" * 50 + "'\n", "h:\n  - 1\n  - [2, &q 3]\n", "i: *q\n", "{",
    "]", ": :", "\t\n", "j: 1e999\n", "k: .nan\n", "<<: *x\n"])


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@budget(60)
@given(st.lists(YAML_PIECES, max_size=6).map("".join) | st.text(max_size=60))
def test_yaml_is_read_bounded_or_refused_in_one_line(text: str) -> None:
    try:
        value = parse_yaml(text, "cfg.yaml")
    except OutsideTextError as e:
        assert str(e).startswith("cfg.yaml: ") and "\n" not in str(e)
        return
    assert _depth(value) <= MAX_NESTING and all(len(s) <= MAX_STRING_CHARS for s in _strings(value))


@budget(60)
@given(JSON_VALUES, st.integers(0, 3 * MAX_NESTING), st.sampled_from(["[", "{\"k\":"]))
def test_json_is_read_bounded_or_refused_in_one_line(value: object, nesting: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * nesting + json.dumps(value) + closer * nesting
    try:
        parsed = parse_json(text, "doc.json")
    except OutsideTextError as e:
        assert str(e).startswith("doc.json: ") and "\n" not in str(e)
        assert _depth(value) + nesting >= MAX_NESTING or "malformed" in str(e)
        return
    assert _depth(parsed) <= MAX_NESTING
    assert all(len(s) <= MAX_STRING_CHARS for s in _strings(parsed))


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [*(k for k in value if isinstance(k, str)), *(s for v in value.values() for s in _strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@budget(80)
@given(st.text(max_size=30) | st.integers(-(10**30), 10**30).map(str) | st.floats().map(repr))
def test_environment_values_are_in_range_or_refused(text: str) -> None:
    try:
        value = env_value("SEGDEPLOY_THREADS", int, THREADS, None, {"SEGDEPLOY_THREADS": text})
    except InputError as e:
        assert str(e).startswith("$SEGDEPLOY_THREADS='") and "\n" not in str(e)
        return
    assert value is None if not text.strip() else 1 <= value <= 256


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("fuzz-hardening") / "colour.onnx")


NUMBERS = st.integers(-(10**12), 10**12) | st.floats() | st.sampled_from(["4", "x", None, True, [], 1.5])


@budget(40)
@given(batch_size=NUMBERS, threads=NUMBERS, alpha=NUMBERS)
def test_predictor_arguments_are_in_range_or_a_value_error(model: Path, batch_size, threads, alpha) -> None:
    try:
        predictor = Predictor(model, runtime="onnxruntime", batch_size=batch_size, threads=threads)
    except (ValueError, TypeError) as e:
        assert "must" in str(e) or "expected" in str(e)
        return
    assert 1 <= predictor.batch_size <= 256
    prediction = predictor.predict(np.full((6, 5, 3), 200, np.uint8))
    try:
        picture = prediction.overlay(alpha)
    except (ValueError, TypeError):
        assert not (isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 <= alpha <= 1)
        return
    assert picture.shape == (6, 5, 3) and isinstance(alpha, int | float) and math.isfinite(float(alpha))


ARRAYS = st.tuples(st.integers(0, 9), st.integers(0, 9), st.sampled_from([None, 1, 2, 3, 4, 5]),
                   st.sampled_from([np.uint8, np.float32, np.int64, np.bool_]))


@budget(40)
@given(st.lists(ARRAYS, min_size=1, max_size=7), st.integers(1, 4))
def test_a_stream_of_arrays_keeps_its_order_and_length(model: Path, shapes: list, batch_size: int) -> None:
    arrays = [np.full((h, w) if c is None else (h, w, c), 100, dtype) for h, w, c, dtype in shapes]
    stream = list(Predictor(model, runtime="onnxruntime", batch_size=batch_size).predict_iter(arrays, workers=2))
    assert len(stream) == len(arrays)
    for i, (array, result) in enumerate(zip(arrays, stream, strict=True)):
        usable = array.dtype == np.uint8 and array.shape[0] and array.shape[1] and (
            array.ndim == 2 or array.shape[2] in (1, 3, 4))
        assert isinstance(result, Prediction if usable else Failure), (i, array.shape, array.dtype, result)
        if usable:
            assert result.mask.shape == array.shape[:2]


SUMMARY_PATHS = [("totals", "processed"), ("totals", "failed"), ("totals", "images_found"), ("images", 0, "input"),
                 ("images", 0, "outputs", "mask"), ("images", 0, "size"), ("ground_truth", "confusion_matrix"),
                 ("ground_truth", "images_scored"), ("shard", "count"), ("shard", "index"), ("failures", 0, "input"),
                 ("settings", "save"), ("model", "classes")]
HOSTILE = (JSON_VALUES | st.sampled_from(["../../x", "/etc/passwd", "a.png", 10**30, -1, 2**63, [[1, 2], [3]],
                                          [[2**62, 0, 0], [0, 0, 0], [0, 0, 0]], 10**9, ["mask", "rle"]]))


@budget(60)
@given(st.lists(st.tuples(st.sampled_from(SUMMARY_PATHS), HOSTILE), max_size=3), st.booleans(),
       st.sampled_from([None, "[]", "[{}]", '[{"image_id": 1}]', "{", "[" * 200 + "]" * 200]))
def test_merge_summary_on_edited_shards_ends_well(tmp_path_factory: pytest.TempPathFactory, edits: list,
                                                  rle: bool, predictions: str | None) -> None:
    docs = copy.deepcopy(shard_docs())
    for path, value in edits:
        try:
            edit(docs[1], path, value)
        except (KeyError, IndexError, TypeError):
            pass
    if rle:
        for doc in docs:
            if isinstance(doc.get("settings"), dict):
                doc["settings"]["save"] = ["mask", "rle"]
    out = write(tmp_path_factory.mktemp("merge"), docs)
    if predictions is not None:
        for k in range(2):
            (out / f"predictions.shard-{k}-of-2.json").write_text(predictions)
    result = CliRunner().invoke(segdeploy, ["merge-summary", str(out)])
    assert_ended_well(result)
    if result.exit_code in (0, 3):
        merged = json.loads((out / "summary.json").read_text())
        assert len({r["input"] for r in merged["images"] + merged["failures"]}) == 5


@budget(40)
@given(st.lists(YAML_PIECES | st.sampled_from(["epochs: 3\n", "lr: nan\n", "categories: [person, *x]\n",
                                                "batch_size: 1e9\n", "image_size: [1, 2]\n", "nope: 1\n"]),
                max_size=5).map("".join), st.sampled_from([".yaml", ".json"]))
def test_config_files_are_settings_or_a_one_line_refusal(tmp_path_factory: pytest.TempPathFactory, text: str,
                                                         suffix: str) -> None:
    pytest.importorskip("torch")
    from segtrain.training.config import load_config_file

    path = tmp_path_factory.mktemp("cfg") / f"settings{suffix}"
    path.write_text(text)
    try:
        data = load_config_file(path)
    except InputError as e:
        assert str(e).startswith(str(path)) and "\n" not in str(e)
        return
    assert isinstance(data, dict) and _depth(data) <= MAX_NESTING


@budget(40)
@given(st.text(max_size=24) | st.integers(-(10**40), 10**40).map(str))
def test_the_pixel_limit_variable_is_a_number_in_range_or_one_line(monkeypatch_value: str) -> None:
    import os

    from segtrain.data.images import max_image_pixels

    old = os.environ.get("SEGTRAIN_MAX_IMAGE_PIXELS")
    os.environ["SEGTRAIN_MAX_IMAGE_PIXELS"] = monkeypatch_value.replace("\x00", "")
    try:
        limit = max_image_pixels()
        assert 256 <= limit <= 2**31 - 1
    except InputError as e:
        assert str(e).startswith("$SEGTRAIN_MAX_IMAGE_PIXELS='") and "\n" not in str(e)
    finally:
        if old is None:
            os.environ.pop("SEGTRAIN_MAX_IMAGE_PIXELS", None)
        else:
            os.environ["SEGTRAIN_MAX_IMAGE_PIXELS"] = old
