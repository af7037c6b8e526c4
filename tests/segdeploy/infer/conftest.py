"""Shared by the inference tests: the colour model (tests/helpers/colour_models.py), built once per module.

A module that needs another model (more layers, another input size) defines its own `model` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from colour_models import build_colour_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_model(tmp_path_factory.mktemp("model") / "colour.onnx")
