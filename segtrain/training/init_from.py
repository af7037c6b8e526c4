"""`--init-from CHECKPOINT`: start training from another run's weights (fine-tuning), keeping what fits.

Every tensor of the checkpoint whose name and shape match the new model is copied in; the classifier
(the architecture's CLASSIFIERS prefixes) is re-created, randomly initialised, whenever the categories
differ, even in number only by name, since its rows mean other classes then. What was kept and what was
left as initialised is summarised by layer group (encoder.layer1, decoder.aspp, ...) in one line of the
run's log. Unlike --resume, nothing else is taken: optimizer, schedule, epochs and history start afresh.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from segtrain.contract import ModelSpec
from segtrain.training.checkpoint import Checkpoint, CheckpointError


def group(name: str) -> str:
    """The layer group a tensor belongs to: its first two name parts (encoder.layer1.0.conv1.weight ->
    encoder.layer1), or the first when the second is an index (head.weight -> head, segmentation_head.0.bias ->
    segmentation_head)."""
    parts = name.split(".")
    return parts[0] if len(parts) < 3 or parts[1].isdigit() else ".".join(parts[:2])


def init_from(model: nn.Module, spec: ModelSpec, source: str | Path) -> str:
    """Copy what fits of the checkpoint at `source` into `model` (built for `spec`); the line to log."""
    from segtrain.models import CLASSIFIERS

    ckpt = Checkpoint.load(source)
    own = model.state_dict()
    new_classes = tuple(ckpt.spec.classes) != tuple(spec.classes)
    classifier = CLASSIFIERS.get(spec.arch, ()) if new_classes else ()
    kept = {}
    for name, target in own.items():
        value = ckpt.model.get(name)
        if not _under(name, classifier) and isinstance(value, torch.Tensor) and value.shape == target.shape \
                and value.dtype == target.dtype:
            kept[name] = value
    if not any(v.dim() > 0 for v in kept.values()):
        raise CheckpointError(f"{ckpt.path}: no weight of its {ckpt.spec.arch}/{ckpt.spec.encoder} model fits a "
                              f"{spec.arch}/{spec.encoder} model, so --init-from cannot start from it")
    model.load_state_dict({**own, **kept})
    return describe(ckpt, spec, kept, own, classifier)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def describe(ckpt: Checkpoint, spec: ModelSpec, kept: dict, own: dict, classifier: tuple[str, ...]) -> str:
    """One line: how many tensors came over, the groups kept whole or in part, and those initialised afresh."""
    total = Counter(group(n) for n in own)
    taken = Counter(group(n) for n in kept)
    whole = [g for g in total if taken[g] == total[g]]
    partly = [f"{g} ({taken[g]}/{total[g]})" for g in total if 0 < taken[g] < total[g]]
    fresh = [g for g in total if taken[g] == 0]
    recreated = [g for g in fresh if _under(g, classifier)]
    unmatched = [g for g in fresh if g not in recreated]
    line = (f"init from {ckpt.path} ({ckpt.spec.arch}/{ckpt.spec.encoder}, epoch {ckpt.epoch}): kept "
            f"{len(kept)} of {len(own)} tensors; kept whole: {', '.join(whole) or 'no layer group'}")
    if partly:
        line += f"; kept in part: {', '.join(partly)}"
    if recreated:
        line += (f"; re-created for the new categories ({', '.join(spec.classes[1:])} instead of "
                 f"{', '.join(ckpt.spec.classes[1:])}): {', '.join(recreated)}")
    if unmatched:
        line += f"; initialised afresh (no tensor of that name and shape in it): {', '.join(unmatched)}"
    return line
