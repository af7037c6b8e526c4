"""One error path and terminal-safe text: outside strings (class names, producer, file names) are printed through
one function (segtrain.common.errors.printable), a runtime's whole message is kept on one line, and `segdeploy
evaluate` reports a model that fails at run time in one line, as batch does."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from onnx_models import conv_model
from PIL import Image

from segdeploy.cli import main
from segtrain.common.errors import whole_message
from segtrain.contract import build_spec


def test_info_prints_control_characters_of_class_names_escaped(tmp_path: Path) -> None:
    spec = build_spec("tiny", "conv1x1", image_size=32,
                      categories=[(1, "ca\rt"), (2, "fake\nline"), (3, "nul\x00"), (4, "\x1b[31mred")])
    model = conv_model(tmp_path / "m.onnx", spec=spec)
    result = CliRunner().invoke(main, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "\x00" not in result.output and "\x1b" not in result.output
    assert "ca\\rt" in result.output and "fake\\nline" in result.output and "nul\\x00" in result.output
    assert not any(line.strip() == "line  (2)  " for line in result.output.splitlines())  # no fake line


def test_a_runtime_message_is_kept_whole_on_one_line() -> None:
    error = RuntimeError("Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'x' failed at y:\n"
                         "the real reason\n")
    assert whole_message(error) == ("Exception from src/inference/src/cpp/core.cpp:84: | Check 'x' failed at y: | "
                                    "the real reason")
    assert whole_message(ValueError("")) == "ValueError"
    assert len(whole_message(RuntimeError("x" * 10_000))) == 4000


def test_evaluate_names_a_model_with_nan_scores_in_one_line(tmp_path: Path) -> None:
    spec = build_spec("tiny", "conv1x1", image_size=32)
    model = conv_model(tmp_path / "nan.onnx", spec=spec, log_input=True)
    root = tmp_path / "ds"
    (root / "test" / "data").mkdir(parents=True)
    Image.new("RGB", (16, 12), (0, 0, 0)).save(root / "test" / "data" / "0.png")  # dark: NaN scores
    labels = {"images": [{"id": 0, "file_name": "0.png", "height": 12, "width": 16}], "annotations": [],
              "categories": [{"id": c, "name": n} for c, n in zip(spec.coco_ids[1:], spec.classes[1:], strict=True)]}
    (root / "test" / "labels.json").write_text(json.dumps(labels))
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(root), "--split", "test"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ") and "NaN or infinite scores" in line
