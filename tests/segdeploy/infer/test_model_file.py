"""Model files: which one runs (exported/ and its variants), a checkpoint given instead, and a file not trusted
blindly: its metadata values and its graph's output are checked when it is opened."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from colour_models import batch_cli, half_image, save
from onnx_models import DEFAULT_SPEC, conv_model
from PIL import Image

from segdeploy.cli import main
from segdeploy.infer.model_file import (
    ModelLoadError,
    choose_model,
    default_model,
    read_model_metadata,
    variant_path,
)
from segdeploy.infer.runtime import OnnxModel


class Raw(str):
    """A metadata value written as it is (not JSON-encoded)."""


def metadata(**changes: object) -> dict[str, str]:
    """The default spec's metadata with some entries replaced by these values, JSON-encoded unless Raw."""
    props = DEFAULT_SPEC.to_metadata()
    for key, value in changes.items():
        props[f"segtrain.{key}"] = value if isinstance(value, Raw) else json.dumps(value)
    return props


def one_line_exit_2(args: list[str]) -> str:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1, res.output
    return res.stderr.strip()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.mark.parametrize(("build", "message"), [
    (dict(channels=7), "the graph's output is ? x 7 x ? x ?; its metadata lists 5 classes"),
    (dict(flatten=True), "the graph's output is ? x ?; its metadata lists 5 classes"),
    (dict(channels=7, flatten=True, output_shape=[]), "the graph's output is ? x ?; its metadata lists 5 classes"),
])
def test_an_output_that_does_not_match_the_classes_is_refused_at_open(tmp_path: Path, photos: Path, build: dict,
                                                                     message: str) -> None:
    model = conv_model(tmp_path / "bad.onnx", **build)
    with pytest.raises(ModelLoadError, match=f"^{model}: " + message.replace("?", r"\?")):
        OnnxModel(model, "cpu")
    line = one_line_exit_2(["batch", str(photos), "--out", str(tmp_path / "out"), "--model", str(model)])
    assert message in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.mask.png"))


@pytest.mark.parametrize("declared", [["N", "C", "H", "W"], []])
def test_a_dynamic_output_is_checked_on_the_first_run(tmp_path: Path, sample_root: Path, declared: list) -> None:
    path = conv_model(tmp_path / "dyn.onnx", channels=7, hide_channels=True, output_shape=declared)
    model = OnnxModel(path, "cpu")  # nothing to see before it runs
    with pytest.raises(ModelLoadError, match=r"the model gave 2 x 7 x 8 x 8 for 2 image\(s\); its metadata lists 5 "
                                             r"classes, so 2 x 5 x H x W was expected"):
        model.run(np.zeros((2, 3, 8, 8), np.float32))
    line = one_line_exit_2(["evaluate", str(path), "--data", str(sample_root), "--split", "validation",
                            "--provider", "cpu"])
    assert line == (f"Error: {path}: the model gave 4 x 7 x 32 x 32 for 4 image(s); its metadata lists 5 classes, "
                    "so 4 x 5 x H x W was expected")


def test_check_logits_refuses_other_ranks_and_batch_sizes() -> None:
    from segdeploy.infer.runtime import check_logits

    batch = np.zeros((2, 3, 8, 8), np.float32)
    for bad in (np.zeros((2, 320)), np.zeros((1, 5, 8, 8)), np.zeros((2, 5, 8))):
        with pytest.raises(ModelLoadError, match="metadata lists 5 classes"):
            check_logits("m.onnx", DEFAULT_SPEC, batch, bad)
    check_logits("m.onnx", DEFAULT_SPEC, batch, np.zeros((2, 5, 4, 4)))


def test_a_good_dynamic_model_runs(tmp_path: Path) -> None:
    model = OnnxModel(conv_model(tmp_path / "ok.onnx", output_shape=["N", "C", "H", "W"]), "cpu")
    assert model.run(np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 5, 8, 8)
    assert model.run(np.zeros((1, 3, 4, 4), np.float32)).shape == (1, 5, 4, 4)


BAD_METADATA = [
    (dict(classes=[f"c{i}" for i in range(300)], coco_ids=list(range(300))), "300 classes; a model has 1 to 255"),
    (dict(palette=[[999, 0, 0]] * 5), "palette: expected integers from 0 to 255, got 999"),
    (dict(palette=[[0, 0]] * 5), "palette colour must have 3 values"),
    (dict(input_size=[100000, 100000]), "input_size: expected integers from 8 to 8192, got 100000"),
    (dict(input_size=[1, 1]), "input_size: expected integers from 8 to 8192, got 1"),
    (dict(classes=["background", "x" * 1000, "b", "c", "d"]), "classes[1]: a name of 1000 characters (at most 100)"),
    (dict(classes=["background", "x" * 10_000_000, "b", "c", "d"]),
     "segtrain.classes: [1]: a string of 10000000 characters"),
    (dict(input_size=[32]), "input_size must have 2 values"),
    (dict(std=[0, 1, 1]), "std: expected positive finite numbers, got 0"),
    (dict(std=Raw("[NaN, 1, 1]")), "std: expected positive finite numbers, got nan"),
    (dict(mean=Raw("[1e999, 0, 0]")), "mean: expected finite numbers, got inf"),
    (dict(std=Raw("not json")), "segtrain.std: malformed JSON"),
    (dict(mean="abc"), "mean must be a list, got 'abc'"),
    (dict(mean=["a", "b", "c"]), "mean: expected finite numbers, got 'a'"),
    (dict(classes="background"), "classes must be a list"),
    (dict(classes=["background", 5, "x", "y", "z"]), "classes must be non-empty names"),
    (dict(coco_ids=[0, 1, 2, 3, -4]), "coco_ids[4]: expected integers >= 0, got -4"),
    (dict(resize="letterbox"), "unknown resize rule 'letterbox'"),
    (dict(ignore_index=3), "5 classes; a model has 1 to 255"),
    (dict(classes=Raw("[" * 100_000 + "]" * 100_000)), "segtrain.classes: nested more than 64 levels deep"),
    (dict(arch=None), "model spec lacks arch"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_METADATA, ids=[m for _, m in BAD_METADATA])
def test_metadata_values_no_model_can_have_are_refused_in_one_line(tmp_path: Path, changes: dict,
                                                                   message: str) -> None:
    props = metadata(**{k: v for k, v in changes.items() if v is not None})
    for key, value in changes.items():
        if value is None:
            del props[f"segtrain.{key}"]
    model = conv_model(tmp_path / "m.onnx", metadata=props)
    for args in (["info", str(model)], ["evaluate", str(model), "--data", str(tmp_path)]):
        line = one_line_exit_2(args)
        assert line.startswith(f"Error: {model}: no segtrain model spec in its metadata (") and message in line


def test_broken_provenance_is_left_out_not_fatal(tmp_path: Path) -> None:
    props = {**DEFAULT_SPEC.to_metadata(), "segdeploy.val_miou": '"high"', "segdeploy.epoch": "[1]",
             "segdeploy.precision": "fp32", "segdeploy.quantization": "{"}
    model = conv_model(tmp_path / "m.onnx", metadata=props)
    res = CliRunner().invoke(main, ["info", str(model), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["provenance"] == {"precision": "fp32"}


def test_provenance_types_cover_every_field() -> None:
    import dataclasses

    from segtrain.contract import _PROVENANCE_TYPES, Provenance

    assert set(_PROVENANCE_TYPES) == {f.name for f in dataclasses.fields(Provenance)}


# --------------------------------------------------------------------------------------------
# Which file runs; a checkpoint given instead


@pytest.fixture(params=["zip", "legacy"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "best_model.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, path, _use_new_zipfile_serialization=request.param == "zip")
    return path


@pytest.mark.parametrize("command", ["info", "evaluate", "batch"])
def test_inference_commands_say_to_export_a_checkpoint_first(command: str, checkpoint: Path, tmp_path: Path,
                                                             sample_root: Path) -> None:
    args = {"info": ["info", str(checkpoint)],
            "evaluate": ["evaluate", str(checkpoint), "--data", str(sample_root)],
            "batch": ["batch", str(sample_root / "test" / "data"), "--out", str(tmp_path / "preds"),
                      "--model", str(checkpoint)]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"Error: {checkpoint}: a PyTorch checkpoint, not an ONNX model; export it first: "
        f"`segdeploy export {checkpoint}`"], result.output


@pytest.mark.parametrize("command", ["info", "batch"])
def test_an_empty_model_file_is_named_as_empty(command: str, tmp_path: Path, sample_root: Path) -> None:
    empty = tmp_path / "zero.onnx"
    empty.write_bytes(b"")
    args = {"info": ["info", str(empty)],
            "batch": ["batch", str(sample_root / "test" / "data"), "--out", str(tmp_path / "preds"),
                      "--model", str(empty)]}
    result = CliRunner().invoke(main, args[command])
    assert result.exit_code == 2 and result.stderr.strip().splitlines() == [
        f"Error: {empty}: empty file (0 bytes), not an ONNX model"], result.output
    assert not (tmp_path / "preds").exists()


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
    with pytest.raises(ModelLoadError) as e:
        default_model(exported)
    assert str(e.value) == (f"no --model given and {exported}/ holds 2 models (deeplab.onnx, segnet.onnx; variants: "
                            f"deeplab.int8.onnx); choose one, e.g. --model {exported / 'deeplab.onnx'}")
    only_variant = _exported(tmp_path / "b", model, ["deeplab.int8.onnx"])
    with pytest.raises(ModelLoadError, match="only variants of deeplab.onnx"):
        default_model(only_variant)
    fp32_only = _exported(tmp_path / "c", model, ["deeplab.onnx"])
    with pytest.raises(ModelLoadError, match=r"deeplab.fp16.onnx: file not found \(`segdeploy export --fp16`"):
        choose_model(None, "fp16", fp32_only)
    assert choose_model(None, None, fp32_only) == (fp32_only / "deeplab.onnx",
                                                    f"no --model given: using {fp32_only / 'deeplab.onnx'}")
    assert variant_path(Path("x/m.fp16.onnx"), "int8") == Path("x/m.int8.onnx")
    assert variant_path(Path("x/m.int8.onnx"), "fp32") == Path("x/m.onnx")


def test_metadata_is_read_from_the_wire_format_as_onnx_reads_it(tmp_path: Path) -> None:
    """read_model_metadata reads metadata_props from protobuf's wire format: what onnx.load gives, for any key
    and value (unicode, empty), wherever the entries sit in the file."""
    import onnx
    from colour_models import build_colour_model

    from segdeploy.infer.model_file import _metadata_props

    path = build_colour_model(tmp_path / "m.onnx", input_size=(32, 64), slow_layers=2, slow_width=8)
    model = onnx.load(str(path))
    for key, value in (("note", "Größe: 32×64 ✓"), ("empty", ""), ("", "no key")):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "after the props"  # a field that follows them
    onnx.save(model, str(path))
    assert _metadata_props(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert read_model_metadata(path).spec.input_size == (32, 64)


def test_reading_a_models_spec_does_not_import_onnx(tmp_path: Path) -> None:
    """Importing onnx takes about half a second, paid by every `segdeploy batch` and every Ray actor when the spec was
    read with onnx.load; the spec is in a few bytes of the file."""
    from colour_models import build_colour_model

    path = build_colour_model(tmp_path / "m.onnx")
    code = ("import sys; from segdeploy.infer.model_file import read_model_metadata; "
            f"print(read_model_metadata({str(path)!r}).spec.num_classes, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.split() == ["3", "False"], out.stderr


@pytest.mark.parametrize("cut", [1, 7, 100, -1])
def test_a_truncated_or_mangled_model_file_is_one_clear_error(tmp_path: Path, cut: int) -> None:
    from colour_models import build_colour_model

    data = build_colour_model(tmp_path / "whole.onnx").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[:cut] if cut > 0 else data[:-40] + b"\xff" * 40)
    with pytest.raises(ModelLoadError, match=r"bad.onnx: (not a readable ONNX model|no segtrain model spec)"):
        read_model_metadata(bad)
