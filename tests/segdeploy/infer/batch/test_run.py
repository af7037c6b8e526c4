"""`segdeploy batch`: sizes, pixel alignment, every kind of input, bad files, reruns, CLI errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from colour_models import (
    BRIGHT,
    CLASSES,
    DARK,
    batch_cli,
    build_colour_model,
    expected_mask,
    half_image,
    half_truth,
    output_files,
    read_png,
    save,
    save_exif_rotated,
    subprocess_env,
)
from PIL import Image

from segdeploy.cli import EXIT_SOME_INPUTS_FAILED, main
from segdeploy.infer.batch.config import BatchConfig
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.batch.run import run_batch
from segdeploy.infer.batch.sources import BatchInputError, find_images
from segdeploy.infer.runtime import resolve_runtime
from segtrain.contract import colorize, default_palette

PALETTE = default_palette(len(CLASSES))


def run(model: Path, input_dir: Path, out_dir: Path, **kwargs) -> object:
    config = BatchConfig(sources=input_dir, out_dir=out_dir, model=model, workers=2, progress=False, **kwargs)
    return run_batch(config, log=lambda message: None)


def outputs_of(out_dir: Path, rel: str) -> tuple[np.ndarray, np.ndarray]:
    paths = output_paths(out_dir, Path(rel))
    with Image.open(paths.mask) as im:
        assert im.mode == "P", f"{paths.mask} is {im.mode}, not an indexed PNG"
    return read_png(paths.mask), read_png(paths.files["overlay"])


def assert_outputs(out_dir: Path, rel: str, size: tuple[int, int]) -> np.ndarray:
    """Mask and overlay exist at `size`; mask values are class indices and it displays as palette[mask]."""
    mask, over = outputs_of(out_dir, rel)
    assert mask.shape == size and over.shape == (*size, 3), rel
    assert set(np.unique(mask)) <= set(range(len(CLASSES))), rel
    paths = output_paths(out_dir, Path(rel))
    with Image.open(paths.mask) as im:  # the indexed mask is the colour mask too
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), colorize(mask, PALETTE))
    if paths.files["color"].exists():
        np.testing.assert_array_equal(read_png(paths.files["color"]), colorize(mask, PALETTE))
    return mask


# --------------------------------------------------------------------------------------------
# Sizes and alignment


def test_outputs_have_each_inputs_size_and_only_class_indices(model: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sizes = [(1, 1), (7, 13), (33, 17), (101, 63), (32, 32), (3, 250)]
    for h, w in sizes:
        save(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), tmp_path / "in" / f"r{h}x{w}.png")
    save_exif_rotated(half_image(40, 70, axis=1), tmp_path / "in" / "rotated.jpg")  # stored 70x40
    with Image.open(tmp_path / "in" / "rotated.jpg") as im:
        assert im.size == (40, 70)
    result = run(model, tmp_path / "in", tmp_path / "out")
    for h, w in sizes:
        assert_outputs(tmp_path / "out", f"r{h}x{w}.png", (h, w))
    assert_outputs(tmp_path / "out", "rotated.jpg", (40, 70))
    by_input = {r.input: r for r in result.summary.images}
    assert by_input["rotated.jpg"].size == (40, 70) and by_input["r3x250.png"].size == (3, 250)
    assert result.totals.processed == len(sizes) + 1 and not result.failures


def test_model_sized_image_is_labelled_pixel_for_pixel(model: Path, tmp_path: Path) -> None:
    """No resizing at the model's input size: every pixel's class is known, channel order included."""
    rng = np.random.default_rng(2)
    choices = np.array([BRIGHT, DARK, (55, 200, 55), (120, 140, 30)], np.uint8)
    image = choices[rng.integers(0, len(choices), (32, 32))]
    save(image, tmp_path / "in" / "pattern.png")
    run(model, tmp_path / "in", tmp_path / "out")
    truth = expected_mask(image)
    assert set(np.unique(truth)) == {0, 1, 2}
    np.testing.assert_array_equal(assert_outputs(tmp_path / "out", "pattern.png", (32, 32)), truth)


@pytest.mark.parametrize(("h", "w", "axis"), [(90, 142, 0), (90, 142, 1), (64, 200, 0), (200, 64, 1),
                                              (34, 40, 1), (32, 96, 1)])
def test_half_bright_image_mask_lands_exactly_at_original_size(model: Path, tmp_path: Path, h: int, w: int,
                                                               axis: int) -> None:
    """Resized to 32x32 and back, the class boundary must fall exactly on the image's middle line."""
    save(half_image(h, w, axis), tmp_path / "in" / "half.png")
    run(model, tmp_path / "in", tmp_path / "out")
    np.testing.assert_array_equal(assert_outputs(tmp_path / "out", "half.png", (h, w)), half_truth(h, w, axis))


def test_exif_rotated_jpeg_mask_is_in_the_displayed_orientation(model: Path, tmp_path: Path) -> None:
    save_exif_rotated(half_image(64, 96, axis=1), tmp_path / "in" / "phone.jpg")
    run(model, tmp_path / "in", tmp_path / "out")
    np.testing.assert_array_equal(assert_outputs(tmp_path / "out", "phone.jpg", (64, 96)), half_truth(64, 96, 1))


def test_overlay_blends_colour_over_photo_and_keeps_background(model: Path, tmp_path: Path) -> None:
    image = half_image(64, 64, axis=0)
    save(image, tmp_path / "in" / "x.png")
    run(model, tmp_path / "in", tmp_path / "out", alpha=0.25)
    mask, over = outputs_of(tmp_path / "out", "x.png")
    inner = (slice(8, 24), slice(8, 56))  # away from the boundary, where JPEG is near exact
    blend = 0.75 * np.asarray(BRIGHT) + 0.25 * np.asarray(PALETTE[1])
    assert np.abs(over[inner].astype(float) - blend).max() <= 4
    assert np.abs(over[40:56, 8:56].astype(float) - np.asarray(DARK)).max() <= 4
    assert (mask[inner] == 1).all() and (mask[40:56] == 0).all()


@pytest.mark.slow
def test_24_megapixel_photo_gets_exact_full_size_outputs(model: Path, tmp_path: Path) -> None:
    h, w = 4000, 6000
    save(half_image(h, w, axis=1), tmp_path / "in" / "big.jpg", quality=95)
    result = run(model, tmp_path / "in", tmp_path / "out")
    mask = assert_outputs(tmp_path / "out", "big.jpg", (h, w))
    # At 6000 px the boundary logits are +/-0.0015, within JPEG's ringing: allow the two middle columns.
    wrong = np.flatnonzero((mask != half_truth(h, w, 1)).any(axis=0))
    assert set(wrong) <= {w // 2 - 1, w // 2}, wrong
    share = result.summary.images[0].class_share
    assert abs(share["red"] - 0.5) <= 2 / w and share["green"] == 0.0


# --------------------------------------------------------------------------------------------
# Kinds of input


def _kinds(root: Path) -> dict[str, tuple[tuple[int, int], np.ndarray | None]]:
    """Write one file of each kind; returns rel path -> (size, exact expected mask or None if lossy)."""
    h, w = 40, 48
    half, truth = half_image(h, w, 1), half_truth(h, w, 1)
    grey = np.where(half[..., :1] == BRIGHT[0], 200, 55).astype(np.uint8)[..., 0]
    save(grey, root / "grey.png")
    save(np.dstack([half, np.full((h, w), 90, np.uint8)]), root / "rgba.png")
    Image.fromarray(half).quantize(colors=4).save(root / "palette.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "sixteen.png")
    assert Image.open(root / "sixteen.png").mode.startswith("I")
    Image.fromarray(half).convert("CMYK").save(root / "cmyk.jpg", quality=95)
    save(half, root / "déjà vu" / "снимок 写真.png")
    save(half, root / "UPPER.JPG", quality=95)
    save(half, root / "same.jpg", quality=95)
    save(half, root / "same.png")
    save(half, root / "bitmap.bmp")
    save(half, root / "scan.TIFF")
    save(half, root / "web.webp", lossless=True)
    (root / "notes.txt").write_text("not an image, and not an image suffix")
    exact = {"grey.png", "rgba.png", "palette.png", "sixteen.png", "déjà vu/снимок 写真.png", "same.png",
             "bitmap.bmp", "scan.TIFF", "web.webp"}
    names = exact | {"cmyk.jpg", "UPPER.JPG", "same.jpg"}
    return {n: ((h, w), truth if n in exact else None) for n in names}


def test_every_kind_of_image_gets_its_outputs(model: Path, tmp_path: Path) -> None:
    kinds = _kinds(tmp_path / "in")
    result = run(model, tmp_path / "in", tmp_path / "out")
    assert not result.failures
    assert sorted(r.input for r in result.summary.images) == sorted(kinds)
    for rel, (size, truth) in kinds.items():
        mask = assert_outputs(tmp_path / "out", rel, size)
        if truth is not None:
            np.testing.assert_array_equal(mask, truth, err_msg=rel)
        else:  # lossy files: the bulk of each half still has its class
            assert (mask[:, 4:20] == 1).all() and (mask[:, 28:44] == 0).all(), rel
    assert not list((tmp_path / "out").rglob("notes.txt*"))


def test_find_images_matches_suffixes_in_any_case_and_skips_the_output_folder(tmp_path: Path) -> None:
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.tif", "e.webp", "f.BMP", "g.txt", "h", "out/i.png", "s/j.tiff"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = find_images(tmp_path, exclude=[tmp_path / "out"])
    assert [p.as_posix() for p in found] == ["a.JPG", "b.jpeg", "c.Png", "d.tif", "e.webp", "f.BMP", "s/j.tiff"]


# --------------------------------------------------------------------------------------------
# Bad inputs and exit codes


def _good_and_bad(root: Path) -> tuple[list[str], dict[str, str]]:
    good = ["ok1.png", "sub/ok2.jpg", "ok3.png"]
    save(half_image(40, 40, 0), root / good[0])
    save(half_image(30, 50, 1), root / good[1], quality=95)
    save(half_image(20, 36, 1), root / good[2])
    (root / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "sub" / "text.jpg").write_text("this is a text file with a .jpg name")
    bad = {"empty.jpg": "empty file", "truncated.png": "cannot decode", "sub/text.jpg": "not an image"}
    return good, bad


def test_bad_files_are_reported_and_the_rest_finish_with_exit_code_3(model: Path, tmp_path: Path) -> None:
    good, bad = _good_and_bad(tmp_path / "in")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                    "--model", str(model), "--batch-size", "2", "--no-progress"])
    assert res.exit_code == EXIT_SOME_INPUTS_FAILED == 3, res.output
    for rel in good:
        assert_outputs(tmp_path / "out", rel, read_png(tmp_path / "in" / rel).shape[:2])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = {f["input"]: f["reason"] for f in summary["failures"]}
    assert sorted(reasons) == sorted(bad)
    for rel, reason in bad.items():
        assert reason in reasons[rel]
        assert f"{rel}: {reasons[rel]}" in res.output  # named with its reason on the console
        assert not list((tmp_path / "out").rglob(Path(rel).name + "*"))
    assert summary["totals"]["processed"] == 3 and summary["totals"]["failed"] == 3
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_clean_run_exits_0_and_summary_describes_it(model: Path, tmp_path: Path) -> None:
    save(half_image(40, 40, 0), tmp_path / "in" / "a.png")
    res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                                    "--model", str(model), "--threads", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "1 images segmented" in res.output and "images/s end-to-end" in res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model"]["path"] == str(model) and summary["model"]["classes"] == list(CLASSES)
    used, reason = summary["runtime"]["used"], summary["runtime"]["reason"]
    if resolve_runtime("auto").runtime == "openvino":  # both installed: the faster one, measured (runtime_choice)
        assert reason.startswith(f"auto: {used} ") and " vs " in reason and summary["runtime"]["requested"] == "auto"
    else:
        assert summary["runtime"] == {"requested": "auto", "used": "onnxruntime", "reason": resolve_runtime().reason}
    assert summary["provider"] == {"openvino": "OpenVINO CPU", "onnxruntime": "CPUExecutionProvider"}[used]
    assert f"on {summary['provider']} [{summary['runtime']['reason']}]" in res.output
    image = summary["images"][0]
    assert image["input"] == "a.png" and image["size"] == [40, 40]
    assert image["class_share"] == {"background": 0.5, "red": 0.5, "green": 0.0}
    assert image["seconds"]["total"] > 0 and set(image["seconds"]) == {"decode", "infer", "write", "total"}
    assert summary["totals"]["images_per_second"] > 0  # the model rate may be None: too fast to time
    assert summary["failures"] == []


# --------------------------------------------------------------------------------------------
# Reruns


def test_rerun_skips_complete_outputs_and_redoes_only_what_is_missing(model: Path, tmp_path: Path) -> None:
    for i in range(4):
        save(half_image(40, 44 + 2 * i, 1), tmp_path / "in" / f"im{i}.png")
    first = run(model, tmp_path / "in", tmp_path / "out")
    before = output_files(tmp_path / "out")
    output_paths(tmp_path / "out", Path("im2.png")).files["overlay"].unlink()
    second = run(model, tmp_path / "in", tmp_path / "out")
    after = output_files(tmp_path / "out")
    assert second.totals.processed == 1 and second.totals.resumed == 3
    changed = {p.name for p in after if before.get(p) != after[p]}
    assert changed == {"im2.png.mask.png", "im2.png.overlay.jpg", "summary.json"}
    # The resumed run's summary still describes every image, with the first run's records.
    records = {r["input"]: r for r in second.summary.to_dict()["images"]}
    assert sorted(records) == [f"im{i}.png" for i in range(4)]
    assert records["im0.png"]["resumed"] is True and "resumed" not in records["im2.png"]
    assert records["im0.png"]["class_share"] == first.summary.images[0].class_share


def test_overwrite_another_alpha_or_model_and_a_replaced_photo_are_redone(model: Path, tmp_path: Path) -> None:
    save(half_image(40, 40, 1), tmp_path / "in" / "a.png")
    save(half_image(40, 40, 1), tmp_path / "in" / "b.png")
    run(model, tmp_path / "in", tmp_path / "out")
    assert run(model, tmp_path / "in", tmp_path / "out").totals.processed == 0
    assert run(model, tmp_path / "in", tmp_path / "out", overwrite=True).totals.processed == 2
    with pytest.raises(BatchInputError, match=r"another run \(--alpha 0.5 there, 0.8 now; see summary.json\)"):
        run(model, tmp_path / "in", tmp_path / "out", alpha=0.8)  # never mixed with the first run's overlays
    assert run(model, tmp_path / "in", tmp_path / "out", alpha=0.8, overwrite=True).totals.processed == 2
    other = build_colour_model(tmp_path / "other.onnx", input_size=(40, 40))
    with pytest.raises(BatchInputError, match=r"another run \(another model \(sha256 "):
        run(other, tmp_path / "in", tmp_path / "out", alpha=0.8)
    assert run(other, tmp_path / "in", tmp_path / "out", alpha=0.8, overwrite=True).totals.processed == 2
    save(half_image(50, 60, 0), tmp_path / "in" / "b.png")  # the user replaces a photo
    again = run(other, tmp_path / "in", tmp_path / "out", alpha=0.8)
    assert again.totals.processed == 1 and again.totals.resumed == 1
    np.testing.assert_array_equal(read_png(output_paths(tmp_path / "out", Path("b.png")).mask), half_truth(50, 60, 0))


def test_default_writes_two_files_per_image_and_other_outputs_are_redone(model: Path, tmp_path: Path) -> None:
    save(half_image(40, 40, 1), tmp_path / "in" / "a.png")
    run(model, tmp_path / "in", tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a.png.mask.png", "a.png.overlay.jpg", "legend.png", "summary.json"]
    with_colour = run(model, tmp_path / "in", tmp_path / "out", save=("overlay", "color"), overwrite=True)
    assert with_colour.totals.processed == 1 and with_colour.summary.settings["save"] == ["mask", "overlay", "color"]
    assert assert_outputs(tmp_path / "out", "a.png", (40, 40)).any()  # checks color.png = palette[mask] too
    assert run(model, tmp_path / "in", tmp_path / "out", save=("overlay", "color")).totals.resumed == 1
    for changed in ({"legend": True}, {"tile": "off"}, {"tile_overlap": 0.5}, {"save": ("mask",)}):
        with pytest.raises(BatchInputError, match="choose a new --out folder, or add --overwrite to replace them"):
            run(model, tmp_path / "in", tmp_path / "out", **changed)
        assert run(model, tmp_path / "in", tmp_path / "out", overwrite=True, **changed).totals.processed == 1, changed
    # the last: --save mask, and nothing of the earlier runs is left beside it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png.mask.png", "legend.png", "summary.json"]


def test_output_folder_inside_input_folder_is_not_read_as_input(model: Path, tmp_path: Path) -> None:
    save(half_image(40, 40, 1), tmp_path / "in" / "a.png")
    run(model, tmp_path / "in", tmp_path / "in" / "preds")
    again = run(model, tmp_path / "in", tmp_path / "in" / "preds")
    assert again.totals.images_found == 1 and again.totals.resumed == 1


# --------------------------------------------------------------------------------------------
# Command-line errors


def test_bad_model_arguments_exit_2_with_the_reason(model: Path, tmp_path: Path) -> None:
    save(half_image(8, 8, 1), tmp_path / "in" / "a.png")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    cases = [(["--model", tmp_path / "missing.onnx"], "missing.onnx: file not found"),
             (["--model", tmp_path / "junk.onnx"], "junk.onnx: not a readable ONNX model"),
             (["--model", model, "--provider", "cuda"], "provider cuda is not available")]
    for extra, message in cases:
        res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", *extra)
        assert res.exit_code == 2 and message in res.output, res.output
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_bad_folders_exit_2(model: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    res = batch_cli(tmp_path / "empty", "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 2 and "no images" in res.output
    res = batch_cli(tmp_path / "empty", "--out", tmp_path / "empty", "--model", model)
    assert res.exit_code == 2 and "is the input folder" in res.output
    res = batch_cli(tmp_path / "nowhere", "--out", tmp_path / "out", "--model", model)
    assert res.exit_code == 2 and "does not exist" in res.output


def test_default_model_is_the_only_onnx_in_exported(model: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    save(half_image(8, 8, 1), tmp_path / "in" / "a.png")
    monkeypatch.chdir(tmp_path)
    res = batch_cli("in", "--out", "out")
    assert res.exit_code == 2 and "exported/ holds no .onnx model" in res.output
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "deeplab.onnx").write_bytes(model.read_bytes())
    res = batch_cli("in", "--out", "out")
    assert res.exit_code == 0, res.output
    assert json.loads(Path("out/summary.json").read_text())["model"]["path"] == "exported/deeplab.onnx"
    (tmp_path / "exported" / "segnet.onnx").write_bytes(model.read_bytes())
    res = batch_cli("in", "--out", "out2")
    assert res.exit_code == 2 and "deeplab.onnx, segnet.onnx" in res.output


def test_model_with_fixed_batch_size_fails_with_advice(tmp_path: Path) -> None:
    import onnx

    path = build_colour_model(tmp_path / "fixed.onnx")
    m = onnx.load(str(path))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(m, str(path))
    for i in range(2):
        save(half_image(8, 8, 1), tmp_path / "in" / f"{i}.png")
    res = batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", path, "--batch-size", "2")
    assert res.exit_code == 1 and "--batch-size 1" in res.output, res.output
    assert batch_cli(tmp_path / "in", "--out", tmp_path / "out", "--model", path, "--batch-size", "1").exit_code == 0


def test_batch_path_never_imports_torch(model: Path, tmp_path: Path) -> None:
    save(half_image(8, 8, 1), tmp_path / "in" / "a.png")
    code = ("import sys, segdeploy.infer.batch.run\n"
            "from segdeploy.cli import main\n"
            "try:\n"
            f"    main(['batch', {str(tmp_path / 'in')!r}, '--out', {str(tmp_path / 'out')!r},"
            f" '--model', {str(model)!r}, '--no-progress'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print('torch' in sys.modules, 'torchvision' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "False False"
    assert (tmp_path / "out" / "a.png.mask.png").is_file()


def test_a_run_too_fast_to_time_in_the_model_still_describes_itself(model: Path, tmp_path: Path) -> None:
    """A tiny model's calls can round to 0 s: its model rate is then unknown (None), not a crash of the last line."""
    import dataclasses

    save(half_image(40, 40, 0), tmp_path / "in" / "a.png")
    result = run(model, tmp_path / "in", tmp_path / "out")
    untimed = dataclasses.replace(result.summary.totals, model_seconds=0.0, model_images_per_second=None)
    line = dataclasses.replace(result, summary=dataclasses.replace(result.summary, totals=untimed)).describe()
    assert "images/s end-to-end)" in line and "in the model" not in line
