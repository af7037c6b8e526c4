"""The training configuration: one typed dataclass, filled from a config file and the command line.

The resolved config is written next to the outputs (`config.json`) and into every checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from segtrain.errors import InputError
from segtrain.machine import usable_cores

LOSSES = ("auto", "ce", "ce+dice", "dice")
DEFAULT_LOSS = {"deeplab": "ce", "segnet": "ce+dice"}


class ConfigError(InputError):
    """A config file or value that cannot be used; the message names the file or field."""


@dataclass
class TrainConfig:
    model: str = "deeplab"
    data: str = "data"
    out: str | None = None            # default runs/<model>
    categories: list[str] | None = None
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.0
    image_size: int = 512
    encoder: str | None = None        # default per model: segtrain.models.DEFAULT_ENCODERS
    encoder_weights: str = "imagenet"
    loss: str = "auto"
    amp: bool | None = None           # None: fp16 on CUDA, off on CPU
    device: str = "auto"
    workers: int | None = None        # None: one fewer than the CPUs, at most 8
    seed: int = 0
    sync_bn: bool = False

    def resolved(self) -> TrainConfig:
        """Fill the defaults that depend on other fields; validate ranges."""
        from segtrain.models import DEFAULT_ENCODERS, MODELS

        c = TrainConfig(**asdict(self))
        if c.model not in MODELS:
            raise ConfigError(f"unknown model {c.model!r}; choose from {', '.join(MODELS)}")
        c.out = c.out or str(Path("runs") / c.model)
        c.encoder = c.encoder or DEFAULT_ENCODERS[c.model]
        c.loss = DEFAULT_LOSS.get(c.model, "ce") if c.loss == "auto" else c.loss
        if c.workers is None:
            c.workers = min(8, usable_cores() - 1)
        for name in ("epochs", "batch_size", "image_size"):
            if getattr(c, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(c, name)}")
        if c.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32, got {c.image_size}")
        if not c.lr > 0:
            raise ConfigError(f"lr must be positive, got {c.lr}")
        if c.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {c.loss!r}")
        return c

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file with the same keys as the command-line flags."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the read forever
        raise ConfigError(f"{path}: not a regular file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({getattr(e, 'strerror', None) or e})") from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # JSON and YAML parsers raise their own error types
        raise ConfigError(f"{path}: malformed config file ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must hold a mapping of settings")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return data
