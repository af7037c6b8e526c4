"""The README's steps work as written: its Python example runs, and export --int8 followed by batch with no
--model does not break."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from colour_models import build_colour_model, half_image, moving_frames, save, save_video, subprocess_env

REPO = Path(__file__).resolve().parents[1]


def python_example() -> str:
    """The fenced Python block of the README's "Python API" section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Python API", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the Python API section should hold one python block"
    return blocks[0]


def test_readme_python_example_runs_without_torch(tmp_path: Path) -> None:
    build_colour_model(tmp_path / "exported" / "deeplab.onnx")
    save(half_image(60, 80, axis=1), tmp_path / "photo.jpg", quality=95)
    for i in range(3):
        save(half_image(40 + 2 * i, 50, axis=0), tmp_path / "photos" / f"p{i}.jpg", quality=95)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    save_video(moving_frames(3), tmp_path / "clip.mp4")
    code = "import sys\nsys.modules['torch'] = None  # the example needs no PyTorch\n" + python_example()
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "('background', 'red', 'green')"
    assert lines[1].startswith("(60, 80) {'background': 0.5, 'red': 0.5, 'green': 0.0}")
    assert lines[2] == "True"  # cv2.imread's array gives the file's mask
    assert "skipped photos/broken.jpg: " in run.stdout
    assert sum(line.startswith("photos/p") for line in lines) == 3
    assert [line.split(":")[0] for line in lines if line.startswith("frame")] == [
        "frame 0 at 0.00 s", "frame 1 at 0.20 s", "frame 2 at 0.40 s"]
    for name in ("photo.overlay.jpg", "photo.color.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_export_with_int8_then_batch_with_no_model(sample_root: Path, make_checkpoint, tmp_path: Path) -> None:
    """README: `segdeploy export ... --int8`, then `segdeploy batch DIR --out preds` (no --model)."""
    ckpt = make_checkpoint(tmp_path / "runs" / "deeplab" / "best_model.pth", "deeplab", "resnet18", 64,
                           data=sample_root)
    env = subprocess_env()

    def segdeploy(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "segdeploy", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    export = segdeploy("export", ckpt, "--int8", "--no-verify", "--calibration-images", "4")
    assert export.returncode == 0, export.stdout + export.stderr
    assert sorted(p.name for p in (tmp_path / "exported").glob("*.onnx")) == ["deeplab.int8.onnx", "deeplab.onnx"]
    images = sample_root / "test" / "data"
    batch = segdeploy("batch", images, "--out", "preds", "--no-progress")
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert "no --model given: using exported/deeplab.onnx; also there: deeplab.int8.onnx" in batch.stderr
    int8 = segdeploy("batch", images, "--out", "preds-int8", "--precision", "int8", "--no-progress")
    assert int8.returncode == 0, int8.stdout + int8.stderr
    count = len(list(images.iterdir()))
    for out, precision in (("preds", "fp32"), ("preds-int8", "int8")):
        assert len(list((tmp_path / out).glob("*.mask.png"))) == count
        assert len(list((tmp_path / out).glob("*.overlay.jpg"))) == count
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        assert summary["model"]["precision"] == precision and summary["totals"]["processed"] == count


def readme_section(title: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split(title, 1)[1].split("\n### ", 1)[0].split("\n#### ", 1)[0]


def test_readme_coco_results_flow_runs_as_written(tmp_path: Path) -> None:
    """README "COCO results that score": batch --save rle --image-ids, segdeploy score, pycocotools' loadRes."""
    from segtrain.data.synthetic import rle_encode

    build_colour_model(tmp_path / "exported" / "deeplab.onnx")
    images, anns = [], []
    for i in range(3):
        name = f"p{i}.png"
        save(half_image(40, 50 + 4 * i, axis=1), tmp_path / "val" / "data" / name)
        truth = np.zeros((40, 50 + 4 * i), np.uint8)
        truth[:, : (50 + 4 * i) // 2] = 1
        images.append({"id": 300 + i, "file_name": name, "height": 40, "width": 50 + 4 * i})
        anns.append({"id": i + 1, "image_id": 300 + i, "category_id": 1, "segmentation": rle_encode(truth),
                     "area": float(truth.sum()), "bbox": [0.0, 0.0, 1.0, 1.0], "iscrowd": 0})
    (tmp_path / "val" / "labels.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    section = readme_section("#### COCO results that score")
    commands = [line.strip().split("  #")[0].split() for line in section.splitlines()
                if line.startswith("    segdeploy")]
    assert [c[:2] for c in commands] == [["segdeploy", "batch"], ["segdeploy", "score"], ["segdeploy", "score"]]
    outputs = []
    for command in commands:
        run = subprocess.run([sys.executable, "-m", "segdeploy", *command[1:], *(["--no-progress"] if
                                                                              command[1] == "batch" else [])],
                             cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        outputs.append(run.stdout)
    assert "mIoU            100.00%" in outputs[1] and "frequency-weighted IoU: 100.00%" in outputs[1]
    assert json.loads(outputs[2])["confusion_matrix"] == [[3240, 0, 0], [0, 3240, 0], [0, 0, 0]]
    (code,) = re.findall(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    run = subprocess.run([sys.executable, "-c", code + "print(sorted(results.getImgIds()))"], cwd=tmp_path,
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.splitlines()[-1] == "[300, 301, 302]", run.stderr


def test_readme_recipes_are_valid_fit_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `segtrain fit` line of the README's "Recipes" section parses and resolves (nothing is trained)."""
    import shlex

    from click.testing import CliRunner

    import segtrain.training.loop as loop
    from segtrain.cli import main
    from segtrain.training.loop import FitResult

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Recipes", 1)[1].split("\n### ", 1)[0]
    lines = [line.split("#")[0].strip() for line in section.splitlines() if line.strip().startswith("segtrain fit")]
    assert len(lines) >= 8
    resolved = []

    def dry_fit(cfg, **kwargs):
        resolved.append(cfg.resolved())
        return FitResult(-1.0, None, 0, False, "runs/x", True)

    monkeypatch.setattr(loop, "fit", dry_fit)
    for line in lines:
        res = CliRunner().invoke(main, shlex.split(line)[1:])
        assert res.exit_code == 0, (line, res.output)
    assert {c.model for c in resolved} == {"deeplab", "unet", "fpn", "deeplabv3plus", "segformer"}
    assert {(c.augment, c.optimizer) for c in resolved} >= {("scale-crop", "sgd"), ("basic", "adamw")}
