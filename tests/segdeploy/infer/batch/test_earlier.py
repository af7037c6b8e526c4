"""An --out never mixes runs: another model or other output settings are refused with the choices (or replaced
with --overwrite), a rerun resumes, and summary.json always describes everything in the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from colour_models import batch_cli, build_colour_model, half_image, save

from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.batch.sources import BatchInputError


def run(model: Path, sources: object, out: Path, **settings) -> object:
    return run_batch(BatchConfig(sources=sources, out_dir=out, model=model, workers=2, progress=False, **settings),
                     log=lambda m: None)


def files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_another_model_with_other_outputs_is_refused_or_replaces_the_run_whole(model: Path, tmp_path: Path) -> None:
    for i in range(3):
        save(half_image(20, 24 + 2 * i, 1), tmp_path / "in" / f"im{i}.png")
    assert batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", model).exit_code == 0
    first = files(tmp_path / "out")
    other = build_colour_model(tmp_path / "other.onnx", input_size=(24, 24))
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", other, "--save", "mask")
    assert res.exit_code == 2
    assert res.output.startswith(f"Error: --out {tmp_path / 'out'} holds the outputs of another run (another model "
                                 "(sha256 ")
    assert "--save mask,overlay there, mask now; see summary.json); choose a new --out folder, or add --overwrite " \
           "to replace them" in res.output and len(res.output.strip().splitlines()) == 1
    assert files(tmp_path / "out") == first  # nothing touched
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", other, "--save", "mask", "--overwrite")
    assert res.exit_code == 0, res.output
    assert "--overwrite: removed" in res.output
    assert files(tmp_path / "out") == ["im0.png.mask.png", "im1.png.mask.png", "im2.png.mask.png", "legend.png",
                                       "summary.json"]  # no overlay of the first model beside the new masks


def test_a_run_into_a_folder_of_the_same_settings_adds_to_what_summary_json_describes(model: Path,
                                                                                      tmp_path: Path) -> None:
    for i in range(4):
        save(half_image(20, 24 + 2 * i, 1), tmp_path / "many" / f"im{i}.png")
    save(half_image(30, 30, 0), tmp_path / "one" / "new.png")
    run(model, tmp_path / "many", tmp_path / "out", save=("mask", "rle"))
    added = run(model, tmp_path / "one", tmp_path / "out", save=("mask", "rle"))
    assert added.totals.processed == 1 and added.totals.images_found == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    records = {r["input"]: r for r in summary["images"]}
    assert sorted(records) == ["im0.png", "im1.png", "im2.png", "im3.png", "new.png"]
    assert records["im0.png"]["resumed"] is True and "resumed" not in records["new.png"]
    assert summary["sources"] == [str(tmp_path / "many"), str(tmp_path / "one")]
    predicted = {e["image_id"] for e in json.loads((tmp_path / "out" / "predictions.json").read_text())}
    assert predicted == set(records)  # predictions.json covers the folder too
    (tmp_path / "out" / "im3.png.mask.png").unlink()  # what is gone is no longer described
    run(model, tmp_path / "one", tmp_path / "out", save=("mask", "rle"))
    assert "im3.png" not in {r["input"] for r in json.loads((tmp_path / "out" / "summary.json").read_text())["images"]}


def test_outputs_without_a_summary_and_a_foreign_summary_are_another_run_too(model: Path, tmp_path: Path) -> None:
    save(half_image(20, 24, 1), tmp_path / "in" / "a.png")
    run(model, tmp_path / "in", tmp_path / "out")
    (tmp_path / "out" / "summary.json").unlink()  # as a run killed before its summary leaves it
    with pytest.raises(BatchInputError, match=r"--legend False there, True now; see a.png.mask.png\)"):
        run(model, tmp_path / "in", tmp_path / "out", legend=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.json").write_text('{"my": "notes"}')
    with pytest.raises(BatchInputError, match=r"another run \(a file segdeploy batch did not write; see summary.json"):
        run(model, tmp_path / "in", tmp_path / "mine")
    assert run(model, tmp_path / "in", tmp_path / "mine", overwrite=True).totals.processed == 1
    assert "model" in json.loads((tmp_path / "mine" / "summary.json").read_text())
