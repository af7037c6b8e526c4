"""`segdeploy merge-summary` on malformed shard summaries: one line naming the file and the JSON path, exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from json_edit import DELETE, edit
from shard_summaries import INPUTS, shard_docs, write

from segdeploy.cli import main


def test_well_formed_hand_written_shards_merge(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["merge-summary", str(write(tmp_path / "out", shard_docs()))])
    assert res.exit_code == 3, res.output  # merged; the failures are named
    merged = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(r["input"] for r in merged["images"] + merged["failures"]) == sorted(INPUTS)


def setter(*path: object, value: object = DELETE) -> Callable[[dict], None]:
    """A change of a summary: the entry at `path` set to `value`, or deleted."""
    return lambda doc: edit(doc, path, value)


CASES = [
    (setter("totals", value=DELETE), "totals: missing (expected an object)"),
    (setter("totals", "processed", value="3"), 'totals.processed: expected an integer >= 0, found "3"'),
    (setter("totals", "stage_seconds_summed", "decode", value=None),
     "totals.stage_seconds_summed.decode: expected a finite number, found null"),
    (setter("images", 0, value=["a.png"]), "images[0]: expected an object, found a list of 1 item(s)"),
    (setter("images", 0, "input", value=7), "images[0].input: expected a non-empty string, found 7"),
    (setter("failures", 0, "reason", value=DELETE), "failures[0].reason: missing (expected a string)"),
    (setter("model", "classes", value="background"), "model.classes: expected a list of items"),
    (setter("shard", "started_at", value=float("nan")), "shard.started_at: expected a finite number, found NaN"),
    (setter("shard", "inputs_total", value=None), "shard.inputs_total: expected an integer >= 0, found null"),
    (setter("ground_truth", "confusion_matrix", value=[["x"]]),
     'ground_truth.confusion_matrix[0][0]: expected an integer >= 0, found "x"'),
    (setter("ground_truth", "images_scored", value=-1), "ground_truth.images_scored: expected an integer >= 0"),
    (setter("ground_truth", "confusion_matrix", value=[[1, 0], [0, 1]]),
     "ground_truth.confusion_matrix: expected a 3x3 matrix (a row and a column per class of the model), found a "
     "list of 2 item(s)"),
    (setter("shard", value=DELETE), "shard: missing (expected an object)"),
    (setter("images", 0, "class_share", value=DELETE), "images[0].class_share: missing (expected an object of"),
    (setter("settings", "save", value=DELETE), "settings.save: missing (expected a list of items"),
    (setter("runtime", value="onnxruntime"), 'runtime: expected an object, found "onnxruntime"'),
]


def merge_damaged(tmp_path: Path, damage) -> tuple[Path, str]:
    """merge-summary over two shard summaries, the second one `damage`d: the OUT folder and the one line it said
    (exit 2 asserted)."""
    docs = shard_docs()
    damage(docs[1])
    out = write(tmp_path / "out", docs)
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    return out, line


@pytest.mark.parametrize(("damage", "message"), CASES, ids=[m.split(":")[0] for _, m in CASES])
def test_malformed_shard_summaries_are_one_line_exit_2(tmp_path: Path, damage, message: str) -> None:
    out, line = merge_damaged(tmp_path, damage)
    assert line.startswith(f"Error: {out / 'summary.shard-1-of-2.json'}: not a summary written by "
                           f"`segdeploy batch --shard` ({message}")
    assert not (out / "summary.json").exists()


@pytest.mark.parametrize("text", ["[]", "null", "5", "[" * 100_000 + "]" * 100_000])
def test_not_an_object_at_all(tmp_path: Path, text: str) -> None:
    out = write(tmp_path / "out", [shard_docs()[0], text])
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    problem = "nested more than 64 levels deep" if text.startswith("[[") else \
        "not a summary written by `segdeploy batch --shard`"
    assert f"summary.shard-1-of-2.json: {problem}" in res.output


# --------------------------------------------------------------------------------------------
# Cross-checks: a summary that is well formed but lies, and files that are not what they claim


def _first_image(doc: dict) -> dict:
    return doc["images"][0]


LIES = [
    (lambda d: d["totals"].update(processed=d["totals"]["processed"] + 5), "totals: expected counts that agree"),
    (lambda d: d["totals"].update(failed=0), "totals: expected counts that agree"),
    (lambda d: d["images"].append(dict(_first_image(d))), "images[1].input: expected inputs listed once"),
    (lambda d: _first_image(d).update(input="../../etc/passwd"),
     "images[0].input: expected a relative path without '..'"),
    (lambda d: _first_image(d).update(outputs={"mask": "/etc/passwd"}),
     "images[0].outputs.mask: expected a relative path without '..'"),
    (lambda d: d["ground_truth"].update(images_scored=99), "ground_truth.images_scored: expected at most the"),
    (lambda d: d["ground_truth"].update(confusion_matrix=[[2**62, 0, 0], [0, 3, 1], [0, 0, 2]]),
     "ground_truth.confusion_matrix: expected a matrix of at most"),
    (lambda d: d["ground_truth"].update(confusion_matrix=[[5, 0, 0], [0, 3], [0, 0, 2, 7]]),
     "ground_truth.confusion_matrix: expected a 3x3 matrix"),
    (lambda d: d["ground_truth"].update(confusion_matrix=[[10**30, 0, 0], [0, 3, 1], [0, 0, 2]]),
     "ground_truth.confusion_matrix: expected a matrix of at most"),
    (lambda d: d["shard"].update(count=10**9), "shard.count: expected an integer from 1 to 100000"),
]


@pytest.mark.parametrize(("damage", "message"), LIES, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(LIES)])
def test_a_summary_that_lies_is_refused_in_one_line(tmp_path: Path, damage, message: str) -> None:
    out, line = merge_damaged(tmp_path, damage)
    assert message in line, line
    assert not (out / "summary.json").exists()


def test_shards_that_overflow_together_are_refused(tmp_path: Path) -> None:
    docs = shard_docs()
    for doc in docs:  # each within the limit, together beyond it
        doc["ground_truth"]["confusion_matrix"] = [[2**61 + 2**60, 0, 0], [0, 3, 1], [0, 0, 2]]
    res = CliRunner().invoke(main, ["merge-summary", str(write(tmp_path / "out", docs))])
    assert res.exit_code == 2 and "the confusion matrices hold more than" in res.output, res.output


def test_a_listed_output_that_is_missing_or_not_a_file_is_refused(tmp_path: Path) -> None:
    out = write(tmp_path / "out", shard_docs())
    mask = out / shard_docs()[1]["images"][0]["outputs"]["mask"]
    mask.unlink()
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and "but it is missing in" in res.output, res.output
    mask.mkdir()
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and "but it is not a regular file" in res.output, res.output


def test_a_shard_count_of_a_billion_is_refused_before_enumerating(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.shard-0-of-1000000000.json").write_text(json.dumps(shard_docs()[0]))
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and "a shard count of 1000000000 (at most 100000)" in res.output, res.output
    (out / "summary.shard-0-of-1000000000.json").unlink()
    (out / ("summary.shard-0-of-" + "9" * 5000 + ".json")[:250]).write_text("{}")  # not a shard file name
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and "no shard summaries" in res.output and "Traceback" not in res.output


def test_fifos_and_folders_where_files_belong(tmp_path: Path) -> None:
    import os

    docs = shard_docs()
    for doc in docs:
        doc["settings"]["save"] = ["mask", "rle"]
    out = write(tmp_path / "out", docs)
    os.mkfifo(out / "predictions.shard-0-of-2.json")
    (out / "predictions.shard-1-of-2.json").mkdir()
    res = CliRunner().invoke(main, ["merge-summary", str(out)])  # never blocks on the FIFO
    assert res.exit_code == 2 and "predictions.shard-0-of-2.json: not a regular file (a FIFO)" in res.output


@pytest.mark.parametrize(("entries", "message"), [
    ([{"category_id": 1, "segmentation": {"size": [4, 6], "counts": "x"}}], "[0].image_id: missing"),
    ([{"image_id": 1, "category_id": 1, "segmentation": [[1, 2], [3]]}], "[0].segmentation: expected"),
    ({"a": 1}, "expected a list of items"),
])
def test_predictions_shards_are_checked_by_their_shape(tmp_path: Path, entries: object, message: str) -> None:
    docs = shard_docs()
    for doc in docs:
        doc["settings"]["save"] = ["mask", "rle"]
    out = write(tmp_path / "out", docs)
    good = [{"image_id": "b.png", "category_id": 0, "segmentation": {"size": [4, 6], "counts": "x"}}]
    (out / "predictions.shard-0-of-2.json").write_text(json.dumps(good))
    (out / "predictions.shard-1-of-2.json").write_text(json.dumps(entries))
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    (line,) = res.output.strip().splitlines()
    assert "predictions.shard-1-of-2.json: not a COCO results list written by" in line and message in line, line
