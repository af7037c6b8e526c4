"""`segdeploy evaluate`: its settings, and the split it scores by default (the same as `segtrain evaluate`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from segdeploy.cli import evaluate_command as onnx_evaluate
from segdeploy.infer.evaluate import ModelEvaluateConfig
from segtrain.cli import evaluate_command as checkpoint_evaluate
from segtrain.common import settings
from segtrain.common.settings import SettingError
from segtrain.evaluation import DEFAULT_SPLIT, EVALUATE_BATCH_SIZE


def test_both_evaluate_commands_default_to_the_same_split() -> None:
    defaults = [next(p.default for p in command.params if p.name == "split")
                for command in (onnx_evaluate, checkpoint_evaluate)]
    assert defaults == [DEFAULT_SPLIT, DEFAULT_SPLIT] and DEFAULT_SPLIT == "validation"


def test_cli_defaults_are_the_config_defaults() -> None:
    given = onnx_evaluate.make_context("evaluate", ["m.onnx"]).params
    for field in dataclasses.fields(ModelEvaluateConfig):
        if field.name in given and field.name != "model":
            assert given[field.name] == settings.default(ModelEvaluateConfig, field.name), field.name
    assert ModelEvaluateConfig(model=Path("m.onnx")).batch_size == EVALUATE_BATCH_SIZE


@pytest.mark.parametrize(("values", "message"), [
    ({"batch_size": 0}, "--batch-size must be from 1 to 256, got 0"),
    ({"runtime": "tensorrt"}, "--runtime must be one of auto, onnxruntime, openvino, got 'tensorrt'"),
    ({"threads": "two"}, "--threads must be a whole number, got 'two'"),
    ({"split": ""}, "--split must not be empty"),
])
def test_a_bad_setting_is_one_line_naming_it(values: dict, message: str) -> None:
    with pytest.raises(SettingError, match=f"^{message.replace('(', '[(]')}"):
        ModelEvaluateConfig(model=Path("m.onnx"), **values)
