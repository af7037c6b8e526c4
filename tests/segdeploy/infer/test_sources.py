"""`segdeploy batch SOURCE...`: folders, files and globs; the model picked from exported/ and its variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from colour_models import batch_cli, half_image, save

from segdeploy.infer.inputs import BatchInputError, choose_model, default_model, resolve_sources, variant_path


def _tree(root: Path) -> None:
    for rel in ("photos/a.jpg", "photos/sub/b.png", "photos/sub/c.JPG", "shoots/day1/d.jpg", "shoots/day2/e.png",
                "loose/f.png"):
        save(half_image(24, 32, 1), root / rel)
    (root / "photos" / "notes.txt").write_text("not an image")


def test_folders_files_and_globs_keep_paths_relative_to_what_was_given(model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = batch_cli("photos", "loose/f.png", "shoots/*/*.jpg", "photos/sub/*.png", "--out", "out", "--model", model)
    assert res.exit_code == 0, res.output
    masks = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.mask.png"))
    # photos/ mirrored; the file at the top; the glob relative to its leading folder shoots/;
    # photos/sub/*.png names photos/sub/b.png, which the folder photos/ gave already: done once
    assert masks == ["a.jpg.mask.png", "day1/d.jpg.mask.png", "f.png.mask.png", "sub/b.png.mask.png",
                     "sub/c.JPG.mask.png"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sources"] == ["photos", "loose/f.png", "shoots/*/*.jpg", "photos/sub/*.png"]
    recursive = [f.key for f in resolve_sources(["shoots/**/*.png", "shoots/day*"])]
    assert recursive == ["day1/d.jpg", "day2/e.png"]


def test_bad_sources_are_one_line_errors(model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path)
    save(half_image(24, 32, 1), tmp_path / "other" / "sub" / "b.png")
    monkeypatch.chdir(tmp_path)
    cases = [(["nowhere"], "nowhere: does not exist"),
             (["photos/*.gif"], "photos/*.gif: no file or folder matches this pattern"),
             (["photos/*.txt"], "photos/*.txt: matches 1 path(s) but no images"),
             (["photos/notes.txt"], "photos/notes.txt: not an image file"),
             (["photos", "other"], "would both write the outputs of 'sub/b.png'"),
             (["photos", "loose", "--gt", "photos/notes.txt"], "--gt matches file names relative to one folder")]
    for sources, message in cases:
        res = batch_cli(*sources, "--out", "out", "--model", model)
        assert res.exit_code == 2, (sources, res.output)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def _exported(root: Path, model: Path, names: list[str]) -> Path:
    (root / "exported").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(model, root / "exported" / name)
    return root / "exported"


def test_no_model_picks_the_fp32_model_beside_its_variants_and_says_so(model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    save(half_image(24, 32, 1), tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path)
    _exported(tmp_path, model, ["deeplab.onnx", "deeplab.int8.onnx", "deeplab.fp16.onnx"])
    res = batch_cli("in", "--out", "out")
    assert res.exit_code == 0, res.output
    assert ("no --model given: using exported/deeplab.onnx; also there: deeplab.fp16.onnx, deeplab.int8.onnx"
            in res.output)
    assert json.loads(Path("out/summary.json").read_text())["model"]["path"] == "exported/deeplab.onnx"
    res = batch_cli("in", "--out", "out8", "--precision", "int8")
    assert res.exit_code == 0 and "using exported/deeplab.int8.onnx" in res.output, res.output
    assert json.loads(Path("out8/summary.json").read_text())["model"]["path"] == "exported/deeplab.int8.onnx"
    res = batch_cli("in", "--out", "out16", "--model", "exported/deeplab.int8.onnx", "--precision", "fp16")
    assert res.exit_code == 0 and "using exported/deeplab.fp16.onnx" in res.output, res.output
    res = batch_cli("in", "--out", "named", "--model", "exported/deeplab.int8.onnx")
    assert res.exit_code == 0 and "using" not in res.output  # named exactly: nothing to say


def test_model_choice_errors(model: Path, tmp_path: Path) -> None:
    exported = _exported(tmp_path / "a", model, ["deeplab.onnx", "deeplab.int8.onnx", "segnet.onnx"])
    with pytest.raises(BatchInputError) as e:
        default_model(exported)
    assert str(e.value) == (f"no --model given and {exported}/ holds 2 models (deeplab.onnx, segnet.onnx; variants: "
                            f"deeplab.int8.onnx); choose one, e.g. --model {exported / 'deeplab.onnx'}")
    only_variant = _exported(tmp_path / "b", model, ["deeplab.int8.onnx"])
    with pytest.raises(BatchInputError, match="only variants of deeplab.onnx"):
        default_model(only_variant)
    fp32_only = _exported(tmp_path / "c", model, ["deeplab.onnx"])
    with pytest.raises(BatchInputError, match=r"deeplab.fp16.onnx: file not found \(`segdeploy export --fp16`"):
        choose_model(None, "fp16", fp32_only)
    assert choose_model(None, None, fp32_only) == (fp32_only / "deeplab.onnx",
                                                    f"no --model given: using {fp32_only / 'deeplab.onnx'}")
    assert variant_path(Path("x/m.fp16.onnx"), "int8") == Path("x/m.int8.onnx")
    assert variant_path(Path("x/m.int8.onnx"), "fp32") == Path("x/m.onnx")
