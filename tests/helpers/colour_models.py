"""Tiny self-describing ONNX models and image files for the `segdeploy batch` tests.

The "colour" model is a 1x1 convolution on the normalised input whose logits are exactly
``(0, R/255 - 0.5, G/255 - 0.55)``: a pixel is class 1 ("red") when its red channel is above
half, else class 2 ("green") when its green channel is above 0.55, else background. The mask of
an image is therefore known without running anything, which makes alignment checks exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from segtrain.contract import ModelSpec

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("background", "red", "green")
# Red channel 200 and 55 give red logits of exactly +a and -a (a = 145/510); green stays class 0.
BRIGHT, DARK = (200, 55, 55), (55, 55, 55)


def colour_spec(input_size: tuple[int, int] = (32, 32)) -> ModelSpec:
    return ModelSpec(arch="tiny", encoder="conv1x1", classes=CLASSES, coco_ids=(0, 1, 2), input_size=input_size)


def expected_mask(image: np.ndarray) -> np.ndarray:
    """The colour model's mask of an RGB image evaluated at full resolution (no resizing)."""
    r, g = image[..., 0].astype(np.float64) / 255, image[..., 1].astype(np.float64) / 255
    logits = np.stack([np.zeros_like(r), r - 0.5, g - 0.55])
    return logits.argmax(0).astype(np.uint8)


def _colour_weights(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    # x_c = (v_c - mean_c) / std_c, so v_c = std_c * x_c + mean_c.
    w = np.zeros((3, 3, 1, 1), np.float32)
    b = np.zeros(3, np.float32)
    w[1, 0], b[1] = spec.std[0], spec.mean[0] - 0.5
    w[2, 1], b[2] = spec.std[1], spec.mean[1] - 0.55
    return w, b


def _slow_branch(layers: int, width: int, rng: np.random.Generator) -> tuple[list, list]:
    """3x3 conv layers whose last weights are zero: real work that adds exactly 0 to the logits."""
    nodes, inits, prev, channels = [], [], "input", 3
    for i in range(layers):
        out_ch = 3 if i == layers - 1 else width
        w = rng.normal(0, 0.1, (out_ch, channels, 3, 3)).astype(np.float32)
        if i == layers - 1:
            w[:] = 0
        inits.append(numpy_helper.from_array(w, f"slow_w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"slow_w{i}"], [f"slow{i}"], pads=[1, 1, 1, 1]))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [f"slow{i}"], [f"slow_relu{i}"]))
        prev, channels = (f"slow_relu{i}" if i < layers - 1 else f"slow{i}"), out_ch
    return nodes, inits


def build_colour_model(path: Path, input_size: tuple[int, int] = (32, 32), slow_layers: int = 0,
                       slow_width: int = 32, spec: ModelSpec | None = None) -> Path:
    """Write the colour model (optionally with a slow branch) with its spec in metadata_props."""
    spec = spec or colour_spec(input_size)
    w, b = _colour_weights(spec)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["fast" if slow_layers else "logits"])]
    if slow_layers:
        slow_nodes, slow_inits = _slow_branch(slow_layers, slow_width, np.random.default_rng(0))
        nodes += slow_nodes + [helper.make_node("Add", ["fast", f"slow{slow_layers - 1}"], ["logits"])]
        inits += slow_inits
    graph = helper.make_graph(
        nodes, "colour", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, spec.to_metadata())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def half_image(h: int, w: int, axis: int) -> np.ndarray:
    """First half (rows < h/2 for axis 0, columns < w/2 for axis 1) BRIGHT, the rest DARK.

    BRIGHT's and DARK's red logits are +/-a, so after the model's resize round trip the class
    boundary of an image with even sides lands exactly on the middle line.
    """
    image = np.empty((h, w, 3), np.uint8)
    image[:] = DARK
    if axis == 0:
        image[: h // 2] = BRIGHT
    else:
        image[:, : w // 2] = BRIGHT
    return image


def half_truth(h: int, w: int, axis: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    if axis == 0:
        mask[: h // 2] = 1
    else:
        mask[:, : w // 2] = 1
    return mask


def save(image: np.ndarray, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **kwargs)
    return path


def save_exif_rotated(displayed: np.ndarray, path: Path) -> Path:
    """A JPEG whose stored pixels are `displayed` turned, with EXIF orientation 6 to turn it back.

    Orientation 6 means "rotate 90 degrees clockwise to display", so the stored pixels are the
    displayed image rotated 90 degrees counter-clockwise.
    """
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, exif=exif, quality=100, subsampling=0)
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def batch_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "segdeploy", "batch", *(str(a) for a in args)]


def run_batch_subprocess(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(*args), env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)


def output_files(out_dir: Path) -> dict[Path, int]:
    """Every file under `out_dir` (temporary ones included) with its mtime in ns."""
    return {p: p.stat().st_mtime_ns for p in sorted(Path(out_dir).rglob("*")) if p.is_file()}


def batch_cli(*args: str | Path) -> object:
    """`segdeploy batch ARGS... --no-progress` through click's test runner (the result has exit_code, output)."""
    from click.testing import CliRunner

    from segdeploy.cli import main

    return CliRunner().invoke(main, ["batch", *(str(a) for a in args), "--no-progress"])


def moving_frames(n: int = 5, h: int = 24, w: int = 32) -> list[np.ndarray]:
    """RGB frames of a BRIGHT ("red") square moving right over DARK: each frame's mask is known (expected_mask)."""
    frames = []
    for i in range(n):
        frame = np.empty((h, w, 3), np.uint8)
        frame[:] = DARK
        frame[4:4 + h // 2, 2 + 3 * i:2 + 3 * i + w // 3] = BRIGHT
        frames.append(frame)
    return frames


def save_video(frames: list[np.ndarray], path: Path, fps: float = 5.0) -> Path:
    """Write RGB frames as a video with OpenCV: lossless FFV1 for .mkv (frames read back exactly), mp4v for .mp4."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = "FFV1" if path.suffix == ".mkv" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as RGB."""
    import cv2

    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames
