"""`segdeploy evaluate`: its settings, and the split it scores by default (the same as `segtrain evaluate`)."""

from __future__ import annotations

from segdeploy.cli import evaluate_command as onnx_evaluate
from segtrain.cli import evaluate_command as checkpoint_evaluate
from segtrain.evaluation import DEFAULT_SPLIT


def test_both_evaluate_commands_default_to_the_same_split() -> None:
    defaults = [next(p.default for p in command.params if p.name == "split")
                for command in (onnx_evaluate, checkpoint_evaluate)]
    assert defaults == [DEFAULT_SPLIT, DEFAULT_SPLIT] and DEFAULT_SPLIT == "validation"
