"""Settings of `segtrain fit` and `segtrain evaluate`, every value through segtrain.common.settings (torch-free).

Training settings arrive in layers, later ones winning: the config stored in a checkpoint
(`--resume`), a `--config` file (YAML or JSON, the flags' names with - or _), the command line.
The resolved config is written next to the outputs (`config.json`) and into every checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from segtrain.common.limits import MAX_CONFIG_BYTES, MAX_INPUT_SIDE
from segtrain.common.outside_text import parse_json, parse_yaml, read_text
from segtrain.common.settings import (
    Checked,
    SettingError,
    at_least,
    check_known,
    checked_values,
    non_empty,
    one_of,
    setting,
)
from segtrain.common.system import usable_cores
from segtrain.evaluation import DEFAULT_SPLIT, EVALUATE_BATCH_SIZE, TTA_MODES

LOSSES = ("auto", "ce", "ce+dice", "dice")
DEFAULT_LOSS = {"deeplab": "ce", "segnet": "ce+dice"}  # every other architecture: ce
# The registered architectures (segtrain.models.MODELS, which a test keeps equal to this), for --help.
ARCHITECTURES = ("deeplab", "segnet", "unet", "fpn", "deeplabv3plus", "segformer")
LR_SCHEDULES = ("constant", "poly", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTS = ("basic", "scale-crop")  # segtrain.training.augment
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "sgd": 0.01}  # SGD: MMSegmentation's 0.01 (torchvision: 0.02)
PROGRESS_MODES = ("auto", "bar", "log", "off")
IMAGE_SIZE_STEP = 32


def default_workers() -> int:
    """Data-loader worker processes without --workers: one fewer than the usable cores, at most 8."""
    return min(8, usable_cores() - 1)


def _image_size(v: int) -> str | None:
    if v % IMAGE_SIZE_STEP:
        return f"must be a multiple of {IMAGE_SIZE_STEP}, got {v}"
    if not IMAGE_SIZE_STEP <= v <= MAX_INPUT_SIDE:
        return f"must be between {IMAGE_SIZE_STEP} and {MAX_INPUT_SIDE}, got {v}"
    return None


@dataclass
class TrainConfig:
    model: str = setting("deeplab", rule=non_empty)
    data: str = setting("data", rule=non_empty)
    out: str | None = setting(None, rule=non_empty)  # None: runs/<model>, or the next free runs/<model>-N
    categories: list[str] | None = setting(None, rule=non_empty)
    epochs: int = setting(30, rule=at_least(1))
    batch_size: int = setting(8, rule=at_least(1))
    optimizer: str = setting("adam", rule=one_of(OPTIMIZERS))
    nesterov: bool = setting(False)  # SGD only
    lr: float | None = setting(None, rule=at_least(0))  # None: DEFAULT_LR of the optimizer
    weight_decay: float = setting(0.0, rule=at_least(0))
    lr_schedule: str = setting("constant", rule=one_of(LR_SCHEDULES))
    warmup_epochs: int = setting(0, rule=at_least(0))
    patience: int | None = setting(None, rule=at_least(1))  # None: no early stop
    image_size: int = setting(512, rule=_image_size)
    augment: str = setting("basic", rule=one_of(AUGMENTS))
    encoder: str | None = setting(None, rule=non_empty)  # default per model: segtrain.models.DEFAULT_ENCODERS
    encoder_weights: str = setting("imagenet", rule=non_empty)
    init_from: str | None = setting(None, rule=non_empty)  # a checkpoint to start from (fine-tuning)
    loss: str = setting("auto", rule=one_of(LOSSES))
    aux_loss: float = setting(0.0, rule=at_least(0))  # weight of the auxiliary head's loss; 0: no head
    amp: bool | None = setting(None)  # None: fp16 on CUDA, off on CPU
    device: str = setting("auto", rule=non_empty)
    workers: int | None = setting(None, rule=at_least(0))  # None: default_workers()
    seed: int = setting(0, rule=at_least(0))
    sync_bn: bool = setting(False)
    compile: bool = setting(False)  # torch.compile the model for training and validation
    progress: str = setting("auto", rule=one_of(PROGRESS_MODES))  # auto: bar on a terminal, else log
    tensorboard: bool = setting(False)

    def resolved(self) -> TrainConfig:
        """Check every field, then fill the defaults that depend on other fields.

        `data` becomes an absolute path, so a checkpoint names its dataset from any folder.
        """
        from segtrain.models import DEFAULT_ENCODERS, MODELS

        c = TrainConfig(**checked_values(self))
        problem = one_of(tuple(MODELS))(c.model)
        if problem:
            raise SettingError(f"model {problem}")
        c.data = os.path.abspath(os.path.expanduser(c.data))
        c.encoder = c.encoder or DEFAULT_ENCODERS[c.model]
        c.loss = DEFAULT_LOSS.get(c.model, "ce") if c.loss == "auto" else c.loss
        if c.nesterov and c.optimizer != "sgd":
            raise SettingError(f"nesterov: Nesterov momentum is an SGD setting; add --optimizer sgd "
                               f"(the optimizer is {c.optimizer})")
        c.lr = DEFAULT_LR[c.optimizer] if c.lr is None else c.lr
        if c.init_from is not None:  # the checkpoint is the starting point, encoder included
            c.init_from = os.path.abspath(os.path.expanduser(c.init_from))
            c.encoder_weights = "none"
        if c.workers is None:
            c.workers = default_workers()
        return c

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckpointEvaluateConfig(Checked):
    """Settings of `segtrain evaluate`."""

    checkpoint: Path = setting()
    data: Path | None = setting(None)  # None: the dataset the checkpoint was trained on
    split: str = setting(DEFAULT_SPLIT, rule=non_empty)
    batch_size: int = setting(EVALUATE_BATCH_SIZE, rule=at_least(1))
    device: str = setting("auto", rule=non_empty)
    at_input_size: bool = setting(False)  # score at the input size, as training-time validation does
    tta: str = setting("off", rule=one_of(TTA_MODES))  # segtrain.evaluation.with_tta


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file with the flags' names (- or _); keys are checked here."""
    path = Path(path)
    text = read_text(path, MAX_CONFIG_BYTES, "config file")
    if path.suffix.lower() in (".yaml", ".yml"):
        data = parse_yaml(text, str(path), "config file")
        data = {} if data is None else data
    else:
        data = parse_json(text, str(path), "config file")
    if not isinstance(data, dict):
        raise SettingError(f"{path}: config file must hold a mapping of settings")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    for key in data:
        check_known(TrainConfig, key, str(path))
    return data
