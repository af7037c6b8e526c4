"""Shared fixtures: the real coco-mini data (skipped when absent), the synthetic sample, the checkpoint builder,
and `opened_images` (every path PIL opens, for the tests that nothing outside a dataset is read).

Helper modules live in tests/helpers/ (on pytest's pythonpath): colour_models (tiny ONNX models whose
masks are known), tiny_arch (a tiny registered architecture), checkpoints (the checkpoint builder).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background by a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, as
    would every process it starts: the Ctrl-C tests would then find nothing to interrupt. Run as from a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def coco_mini_path() -> Path:
    return Path(os.environ.get("SEGTRAIN_COCO_MINI", REPO.parent / "shared" / "data" / "coco-mini"))


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    root = coco_mini_path()
    if not (root / "train" / "labels.json").is_file():
        pytest.skip(f"real test data not found at {root} (set SEGTRAIN_COCO_MINI)")
    return root


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segtrain.data.synthetic import make_sample_dataset

    return make_sample_dataset(tmp_path_factory.mktemp("sample") / "data", seed=0)


@pytest.fixture(autouse=True, scope="session")
def _mask_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the mask cache inside the test's temporary folders, never in the user's home."""
    os.environ["SEGTRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("mask-cache"))


@pytest.fixture(scope="session")
def make_checkpoint():
    """The checkpoint builder: make_checkpoint(path, arch, encoder, size, data=None, steps=0, ...) -> path."""
    from checkpoints import build_checkpoint

    return build_checkpoint


@pytest.fixture
def opened_images(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path PIL.Image.open is called with during the test, or that the file it is given was opened from,
    resolved (images are read through it only)."""
    import PIL.Image

    seen: list[Path] = []
    real = PIL.Image.open

    def spy(fp, *args, **kwargs):
        name = fp if isinstance(fp, (str, Path)) else getattr(fp, "name", None)
        if isinstance(name, (str, Path)):
            seen.append(Path(name).resolve())
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", spy)
    return seen
