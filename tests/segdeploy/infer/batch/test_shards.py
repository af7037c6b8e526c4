"""`segdeploy batch --shard K/N` and `segdeploy merge-summary`: N shards do exactly what one run does."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import build_colour_model, half_image, half_truth, save, subprocess_env

from segdeploy.cli import main
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.merge import MergeError, merge_shard_summaries
from segdeploy.infer.batch.outputs import owner_tag
from segdeploy.infer.batch.resume import STALE_TEMP_SECONDS, sweep_temp_files
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.batch.shards import Shard, ShardError, parse_shard, shard_of
from segtrain.data.synthetic import rle_encode

N = 3
SHARD_SUMMARIES = [f"summary.shard-{k}-of-{N}.json" for k in range(N)]
SHARD_PREDICTIONS = [f"predictions.shard-{k}-of-{N}.json" for k in range(N)]
SAVE = ("mask", "overlay", "rle")
LEGENDS = {"legend.png", "sub/legend.png", "sub/deeper/legend.png"}
_SLURM_AND_K8S = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
                  "JOB_COMPLETION_INDEX")


def _inputs(root: Path) -> set[str]:
    """14 readable images of several sizes and folders (one name non-ASCII) and one unreadable file."""
    keys = set()
    for i in range(14):
        folder = ("", "sub/", "sub/deeper/")[i % 3]
        name = f"{folder}{'café' if i == 4 else 'im'}{i:02d}.{'PNG' if i == 7 else 'png'}"
        save(half_image(24 + 2 * (i % 4), 30 + 2 * (i % 5), i % 2), root / name)
        keys.add(name)
    (root / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    return keys | {"sub/broken.jpg"}


def _run(input_dir: Path, out_dir: Path, model: Path, shard: Shard | None = None, **kw: object) -> dict:
    config = BatchConfig(sources=input_dir, out_dir=out_dir, model=model, workers=2, progress=False, shard=shard,
                         **kw)
    return run_batch(config, log=lambda m: None).summary.to_dict()


def _listed(summary: dict) -> list[str]:
    return [r["input"] for r in summary["images"]] + [f["input"] for f in summary["failures"]]


def _files(out_dir: Path) -> set[str]:
    return {p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One unsharded run and shards 0/3, 1/3, 2/3 into one shared folder, with what each shard wrote."""
    root = tmp_path_factory.mktemp("shard")
    model = build_colour_model(root / "colour.onnx")
    keys = _inputs(root / "in")
    whole = _run(root / "in", root / "whole", model, save=SAVE)
    _run(root / "in", root / "again", model, save=SAVE)
    written, shards = [], []
    for k in range(N):
        before = _files(root / "sharded") if (root / "sharded").exists() else set()
        shards.append(_run(root / "in", root / "sharded", model, Shard(k, N), save=SAVE))
        written.append(_files(root / "sharded") - before)
    return {"root": root, "model": model, "keys": keys, "whole": whole, "shards": shards, "written": written}


def test_shards_together_write_exactly_the_unsharded_outputs(runs: dict) -> None:
    whole_dir, sharded_dir = runs["root"] / "whole", runs["root"] / "sharded"
    outputs = _files(whole_dir) - {"summary.json", "predictions.json"}
    assert len(outputs) == 2 * (len(runs["keys"]) - 1) + len(LEGENDS)  # two files per readable image
    assert LEGENDS <= outputs
    assert _files(sharded_dir) == outputs | set(SHARD_SUMMARIES) | set(SHARD_PREDICTIONS)
    again_dir = runs["root"] / "again"
    assert _files(again_dir) == _files(whole_dir)
    for rel in sorted(outputs | {"predictions.json"}):  # byte for byte: no file holds a value of one run
        assert (whole_dir / rel).read_bytes() == (again_dir / rel).read_bytes(), rel  # (timings: summary.json)
    for rel in sorted(outputs):
        assert (whole_dir / rel).read_bytes() == (sharded_dir / rel).read_bytes(), rel


def test_each_input_is_done_by_exactly_one_shard_its_hash_names(runs: dict) -> None:
    listed = [set(_listed(s)) for s in runs["shards"]]
    assert all(listed), "every shard should have a share of these 15 inputs"
    assert sum(len(s) for s in listed) == len(set().union(*listed)) == len(runs["keys"])  # disjoint, complete
    assert set().union(*listed) == runs["keys"]
    for k, (summary, share) in enumerate(zip(runs["shards"], listed, strict=True)):
        assert share == {key for key in runs["keys"] if shard_of(key, N) == k}
        assert summary["totals"]["resumed"] == 0 and summary["totals"]["images_found"] == len(share)
        assert summary["shard"]["index"] == k and summary["shard"]["inputs_total"] == len(runs["keys"])
        # A shard writes the outputs of its own share only (and its own summary).
        own = {f"{key}{suffix}" for key in share if key != "sub/broken.jpg"
               for suffix in (".mask.png", ".overlay.jpg")}
        assert runs["written"][k] - LEGENDS == own | {SHARD_SUMMARIES[k], SHARD_PREDICTIONS[k]}
    assert sum("sub/broken.jpg" in {f["input"] for f in s["failures"]} for s in runs["shards"]) == 1


def test_partition_is_a_pinned_hash_of_the_nfc_relative_path() -> None:
    for key in ["a.jpg", "sub/deeper/x.png", "café.png"]:
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
        for n in (1, 2, 3, 7, 64):
            assert shard_of(key, n) == int.from_bytes(digest, "big") % n
    decomposed, composed = "cafe\u0301/x.png", "caf\u00e9/x.png"
    assert all(shard_of(decomposed, n) == shard_of(composed, n) for n in range(1, 40))
    counts = np.bincount([shard_of(f"photos/{i:05d}.jpg", N) for i in range(3000)], minlength=N)
    assert counts.min() > 900, counts  # balanced on average


def test_adding_and_removing_files_moves_no_other_file(runs: dict, tmp_path: Path) -> None:
    shutil.copytree(runs["root"] / "in", tmp_path / "in")
    removed = sorted(runs["keys"] - set(_listed(runs["shards"][1])))[0]  # a file of another shard
    (tmp_path / "in" / removed).unlink()
    added = {f"new/n{i}.png" for i in range(6)}
    for key in added:
        save(half_image(20, 20, 0), tmp_path / "in" / key)
    again = _run(tmp_path / "in", tmp_path / "out", runs["model"], Shard(1, N))
    before = set(_listed(runs["shards"][1]))
    assert set(_listed(again)) == before | {k for k in added if shard_of(k, N) == 1}
    assert again["shard"]["inputs_total"] == len(runs["keys"]) - 1 + len(added)


def test_a_shard_with_no_inputs_still_writes_its_summary(runs: dict, tmp_path: Path) -> None:
    empty = next(k for k in range(50) if not any(shard_of(key, 50) == k for key in runs["keys"]))
    summary = _run(runs["root"] / "in", tmp_path / "out", runs["model"], Shard(empty, 50))
    assert summary["images"] == [] and summary["failures"] == [] and summary["totals"]["processed"] == 0
    assert (tmp_path / "out" / f"summary.shard-{empty}-of-50.json").is_file()


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_merge_summary_equals_the_unsharded_summary(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    shutil.copytree(runs["root"] / "sharded", out)
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 3, res.output  # merged, but one input was unreadable
    assert "merged 3 shard summaries: 14 images segmented, 0 already done, 1 failed" in res.output
    assert "sub/broken.jpg" in res.output
    merged, whole = json.loads((out / "summary.json").read_text()), runs["whole"]
    assert _without_timings(merged["images"]) == _without_timings(whole["images"])
    assert [r["class_share"] for r in merged["images"]] == [r["class_share"] for r in whole["images"]]
    assert merged["failures"] == whole["failures"]
    for key in ("images_found", "processed", "resumed", "failed"):
        assert merged["totals"][key] == whole["totals"][key], key
    assert merged["model"] == whole["model"] and merged["settings"] == whole["settings"]
    shards = runs["shards"]
    span = max(s["shard"]["finished_at"] for s in shards) - min(s["shard"]["started_at"] for s in shards)
    assert merged["totals"]["seconds"] == pytest.approx(span, abs=1e-3)
    assert merged["totals"]["seconds"] >= max(s["totals"]["seconds"] for s in shards)
    assert merged["totals"]["images_per_second"] == pytest.approx(14 / merged["totals"]["seconds"], rel=1e-3)
    assert merged["totals"]["images_per_second_summed_over_shards"] == pytest.approx(
        sum(s["totals"]["images_per_second"] for s in shards), abs=1e-3)
    assert [s["summary"] for s in merged["shards"]] == SHARD_SUMMARIES
    # predictions.json of the shards joined: the unsharded run's, entry for entry
    assert "predictions.json" in res.output
    whole_predictions = json.loads((runs["root"] / "whole" / "predictions.json").read_text())
    assert json.loads((out / "predictions.json").read_text()) == whole_predictions
    assert {e["image_id"] for e in whole_predictions} == runs["keys"] - {"sub/broken.jpg"}


def test_merge_summary_names_a_missing_shard_predictions_file(runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    shutil.copytree(runs["root"] / "sharded", out)
    (out / SHARD_PREDICTIONS[1]).unlink()
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2 and f"{SHARD_PREDICTIONS[1]}: missing" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def _edit(path: Path, change: object) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _stale_count(out: Path) -> None:
    shutil.copy(out / SHARD_SUMMARIES[0], out / "summary.shard-0-of-2.json")


def _other_model(out: Path) -> None:
    _edit(out / SHARD_SUMMARIES[2], lambda d: d["model"].update(sha256="0" * 64))


def _duplicate(out: Path) -> None:
    first = json.loads((out / SHARD_SUMMARIES[0]).read_text())["images"][0]
    _edit(out / SHARD_SUMMARIES[1], lambda d: d["images"].append(first))


def _other_inputs(out: Path) -> None:
    _edit(out / SHARD_SUMMARIES[1], lambda d: d["shard"].update(inputs_sha256="f" * 64, inputs_total=16))


def _other_alpha(out: Path) -> None:
    _edit(out / SHARD_SUMMARIES[1], lambda d: d["settings"].update(alpha=0.7))


def _other_outputs(out: Path) -> None:
    _edit(out / SHARD_SUMMARIES[1], lambda d: d["settings"].update(save=["mask", "overlay"]))


def _other_tiling(out: Path) -> None:
    _edit(out / SHARD_SUMMARIES[2], lambda d: d["settings"].update(tile="off"))


def _corrupt(out: Path) -> None:
    (out / SHARD_SUMMARIES[2]).write_text('{"images": [')


def _missing(out: Path) -> None:
    (out / SHARD_SUMMARIES[1]).unlink()


def _none(out: Path) -> None:
    for name in SHARD_SUMMARIES:
        (out / name).unlink()


@pytest.mark.parametrize(("damage", "message"), [
    (_missing, "1 of 3 shard summaries missing (summary.shard-1-of-3.json)"),
    (_none, "no shard summaries"),
    (_stale_count, "shard summaries of different shard counts"),
    (_other_model, "summary.shard-2-of-3.json and summary.shard-0-of-3.json disagree on the model"),
    (_other_alpha, "disagree on the overlay alpha: 0.7 vs 0.5"),
    (_other_outputs, "disagree on the outputs (--save): ['mask', 'overlay'] vs ['mask', 'overlay', 'rle']"),
    (_other_tiling, "disagree on the tiling (--tile, --tile-overlap): ('off', 0.25) vs ('auto', 0.25)"),
    (_duplicate, "is listed by both summary.shard-0-of-3.json and summary.shard-1-of-3.json"),
    (_other_inputs, "saw different input files (16 vs 15 images)"),
    (_corrupt, "summary.shard-2-of-3.json: malformed JSON"),
], ids=lambda v: getattr(v, "__name__", "")[1:] or None)
def test_merge_summary_refuses_missing_or_disagreeing_shards(runs: dict, tmp_path: Path, damage: object,
                                                             message: str) -> None:
    out = tmp_path / "sharded"
    shutil.copytree(runs["root"] / "sharded", out)
    damage(out)
    res = CliRunner().invoke(main, ["merge-summary", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1  # one line: "Error: <out>: ..."
    assert not (out / "summary.json").exists()
    with pytest.raises(MergeError, match="^.+$"):
        merge_shard_summaries(out)


# --------------------------------------------------------------------------------------------
# --shard values


@pytest.mark.parametrize(("value", "message"), [
    ("3/3", "the shard index K must be below N (shards are numbered 0 to 2)"),
    ("0/0", "the shard count N must be from 1 to 100000"),
    ("-1/3", "expected K/N with 0 <= K < N"),
    ("1", "expected K/N"),
    ("a/b", "expected K/N"),
    ("1/3/4", "expected K/N"),
    ("", "expected K/N"),
    ("auto", "neither SLURM_ARRAY_TASK_ID"),
])
def test_bad_shard_values_are_usage_errors(runs: dict, tmp_path: Path, value: str, message: str) -> None:
    args = ["batch", str(runs["root"] / "in"), "--out", str(tmp_path / "out"), "--model", str(runs["model"]),
            "--shard", value, "--no-progress"]
    res = CliRunner().invoke(main, args, env=dict.fromkeys(_SLURM_AND_K8S))
    assert res.exit_code == 2, res.output
    assert "Invalid value for '--shard'" in res.output and message in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("value", "env", "expected"), [
    ("auto", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, Shard(2, 3)),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
              "SLURM_ARRAY_TASK_MAX": "3"}, Shard(2, 3)),  # --array=1-3
    ("auto/3", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "3"}, Shard(0, 3)),
    ("auto/4", {"JOB_COMPLETION_INDEX": "1"}, Shard(1, 4)),
    (" 1/2 ", {}, Shard(1, 2)),
])
def test_shard_from_slurm_and_kubernetes_environment(value: str, env: dict, expected: Shard) -> None:
    assert parse_shard(value, env) == expected


@pytest.mark.parametrize(("value", "env", "message"), [
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "pass --shard auto/N"),
    ("auto/4", {"JOB_COMPLETION_INDEX": "4"}, "must be below N"),
    ("auto/4", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}, "has 3 tasks, not 4"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_MAX": "4"}, "not a contiguous range"),  # --array=0-4:2
    ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, "'x' is not a whole number"),
    ("auto/2", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "JOB_COMPLETION_INDEX": "1"}, "both"),
])
def test_bad_shard_environment_is_named(value: str, env: dict, message: str) -> None:
    with pytest.raises(ShardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_shard(value, env)


def test_shard_auto_on_the_command_line_reads_the_slurm_task(runs: dict, tmp_path: Path) -> None:
    env = {**dict.fromkeys(_SLURM_AND_K8S), "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    res = CliRunner().invoke(main, ["batch", str(runs["root"] / "in"), "--out", str(tmp_path / "out"),
                                    "--model", str(runs["model"]), "--shard", "auto", "--no-progress"], env=env)
    assert res.exit_code == 0, res.output  # broken.jpg is not in shard 1
    summary = json.loads((tmp_path / "out" / SHARD_SUMMARIES[1]).read_text())
    assert _listed(summary) == _listed(runs["shards"][1])
    assert f"shard 1/3: {len(_listed(summary))} of 15 inputs" in res.output
    assert f"segdeploy merge-summary {tmp_path / 'out'}" in res.output


# --------------------------------------------------------------------------------------------
# --gt with shards


def _scored_dataset(root: Path) -> Path:
    """Six images whose truth differs from the prediction in known ways, and their labels.json."""
    images, annotations = [], []
    for i in range(6):
        h, w, axis = 20 + 4 * i, 24 + 2 * i, i % 2
        name = f"{'sub/' if i % 2 else ''}g{i}.png"
        save(half_image(h, w, axis), root / name)
        truth = half_truth(h, w, axis)
        if i % 3 == 0:  # wider truth than prediction
            truth[: h * 3 // 4, : w * 3 // 4] = 1
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + (i == 5),
                            "segmentation": rle_encode(truth), "area": float(truth.sum()),
                            "bbox": [0.0, 0.0, float(w), float(h)], "iscrowd": 0})
    images.append({"id": 99, "file_name": "gone.png", "height": 8, "width": 8})
    labels = {"images": images, "annotations": annotations,
              "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}
    (root / "labels.json").write_text(json.dumps(labels))
    return root / "labels.json"


def test_merged_ground_truth_scores_equal_the_unsharded_ones(runs: dict, tmp_path: Path) -> None:
    labels = _scored_dataset(tmp_path / "in")
    whole = _run(tmp_path / "in", tmp_path / "whole", runs["model"], gt=labels)["ground_truth"]
    shards = [_run(tmp_path / "in", tmp_path / "sharded", runs["model"], Shard(k, N), gt=labels)["ground_truth"]
              for k in range(N)]
    assert [s["images_scored"] for s in shards] != [6, 0, 0] and sum(s["images_scored"] for s in shards) == 6
    assert sum(np.sum(s["confusion_matrix"]) for s in shards) == np.sum(whole["confusion_matrix"])
    res = CliRunner().invoke(main, ["merge-summary", str(tmp_path / "sharded")])
    assert res.exit_code == 0, res.output
    assert "6 images scored, 0 inputs without ground truth" in res.output and "mIoU" in res.output
    merged = json.loads((tmp_path / "sharded" / "summary.json").read_text())["ground_truth"]
    assert merged == whole  # IoU per class, mIoU, pixel accuracy, pixels, counts, problems, matrix
    assert 0 < merged["miou"] < 1 and merged["iou"]["red"] < 0.95
    assert any("gone.png" in p for p in merged["problems"])


# --------------------------------------------------------------------------------------------
# Temporary files of concurrent runs


_WRITER = """
import sys, time
from pathlib import Path
from segdeploy.infer.batch.outputs import owner_tag
from segtrain.common.files import atomic_write_bytes

def write(f):
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

atomic_write_bytes(Path(sys.argv[1]), write, tag=owner_tag())
"""


def test_sweep_spares_a_running_writers_temporary_file_and_removes_it_once_the_writer_dies(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.jpg.mask.png"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], env=subprocess_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        (temp,) = (tmp_path / "sub").glob(".a.jpg.mask.png.*.tmp")
        assert sweep_temp_files(tmp_path) == [] and temp.exists()  # another shard's write in flight
    finally:
        writer.kill()
        writer.wait()
    assert temp.exists() and sweep_temp_files(tmp_path) == [temp] and not temp.exists()


def test_sweep_rules_for_temporary_files_of_other_writers(tmp_path: Path) -> None:
    mine = owner_tag()
    where, pid, token = mine.split("-")[1:]
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    elsewhere = "0" * 12 if where != "0" * 12 else "1" * 12
    names = {
        f".a.png.mask.png.{mine}.k3j_x9a1.tmp": True,  # this process, writing now
        f".b.png.color.png.sd-{where}-{pid}-{'0' * 8 if token != '0' * 8 else '1' * 8}.abcdefgh.tmp": False,
        f".c.png.overlay.jpg.sd-{where}-{dead_pid}-12345678.abcdefgh.tmp": False,  # a dead process here
        f".summary.shard-1-of-3.json.sd-{elsewhere}-{pid}-12345678.abcdefgh.tmp": True,  # another machine
        f".d.png.mask.png.sd-{elsewhere}-7-12345678.abcdefgh.tmp": False,  # another machine, long ago
        ".e.png.mask.png.abcdefgh.tmp": False,  # untagged: from before tags, swept as before
        ".notes.txt.abcdefgh.tmp": True,  # not ours
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(tmp_path / f".d.png.mask.png.sd-{elsewhere}-7-12345678.abcdefgh.tmp", (old, old))
    removed = sweep_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, kept in names.items() if not kept)
    assert all((tmp_path / n).exists() == kept for n, kept in names.items())
