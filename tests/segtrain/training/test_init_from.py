"""--init-from CHECKPOINT: fine-tuning keeps every weight that fits, re-creates the classifier when the categories
differ, and says which layers were kept; a checkpoint of which nothing fits, or one given with --resume, is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_arch import POOL_ARCH, tiny_config, tiny_registered

from segtrain.cli import main
from segtrain.data.synthetic import make_sample_dataset
from segtrain.training.checkpoint import CheckpointError
from segtrain.training.init_from import group
from segtrain.training.loop import fit

TINY = ["--encoder", "conv", "--image-size", "32", "--batch-size", "2", "--workers", "0", "--device", "cpu",
        "--progress", "off", "--epochs", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("init") / "data", seed=8, sizes={"train": 4, "validation": 2})


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init-run") / "run"
    with tiny_registered():
        fit(tiny_config(data, out, epochs=1), log=lambda _: None)
    return out / "best_model.pth"


@pytest.fixture(autouse=True)
def _tiny():
    with tiny_registered():
        yield


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_layer_groups() -> None:
    assert group("encoder.layer1.0.conv1.weight") == "encoder.layer1"
    assert group("segmentation_head.0.bias") == "segmentation_head" and group("head.weight") == "head"
    assert group("body.0.weight") == "body"


def test_other_categories_keep_the_body_and_re_create_the_classifier(data: Path, trained: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(out), *TINY, "--lr", "0",
                                    "--init-from", str(trained), "--categories", "person,cat"])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("init from"))
    assert line == (f"init from {trained} ({POOL_ARCH}/conv, epoch 1): kept 14 of 16 tensors; kept whole: body, pool; "
                    "re-created for the new categories (person, cat instead of person, cat, sports ball, book): head")
    before, after = weights(trained), weights(out / "last.pth")
    for name in ("body.0.weight", "body.0.bias", "pool.1.weight"):  # lr 0: exactly what was kept
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert before["head.weight"].shape[0] == 5 and after["head.weight"].shape[0] == 3
    config = torch.load(out / "last.pth", weights_only=True)["config"]
    assert config["init_from"] == str(trained) and config["encoder_weights"] == "none"


def test_the_same_categories_keep_the_classifier_too(data: Path, trained: Path, tmp_path: Path) -> None:
    lines = []
    fit(tiny_config(data, tmp_path / "tuned", epochs=1, lr=0.0, init_from=str(trained)), log=lines.append)
    assert any(x.endswith("kept 16 of 16 tensors; kept whole: body, head, pool") for x in lines), lines
    torch.testing.assert_close(weights(tmp_path / "tuned" / "last.pth")["head.weight"], weights(trained)["head.weight"])


def test_a_checkpoint_of_which_nothing_fits_is_refused(data: Path, make_checkpoint, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "deeplab.pth", "deeplab", "resnet18", 64)
    with pytest.raises(CheckpointError, match="no weight of its deeplab/resnet18 model fits a tinypool/conv model"):
        fit(tiny_config(data, tmp_path / "x", init_from=str(other)), log=lambda _: None)
    assert not (tmp_path / "x").exists()


def test_bad_uses_are_one_line_errors(data: Path, trained: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(tmp_path / "a"), *TINY,
                                    "--init-from", str(tmp_path / "missing.pth")])
    assert res.exit_code == 2 and res.output == f"Error: {tmp_path / 'missing.pth'}: checkpoint not found\n"
    last = trained.parent / "last.pth"
    res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(last), "--init-from", str(trained)])
    assert res.exit_code == 2 and "--init-from starts a new run from a model; --resume continues a run" in res.output
