"""`fit --aux-loss W`: an FCN head on the encoder's penultimate stage, its loss added with weight W during
training (torchvision's aux_loss, MMSegmentation's auxiliary_head); dropped from checkpoints' models and
exports, kept in last.pth for --resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from tiny_arch import POOL_ARCH, tiny_config, tiny_registered

from segtrain.cli import main
from segtrain.contract import build_spec
from segtrain.data.synthetic import make_sample_dataset
from segtrain.models import AUX_TAPS, MODELS, ModelError, build_model, load_model, with_auxiliary
from segtrain.training.checkpoint import CheckpointError
from segtrain.training.loop import fit
from segtrain.training.losses import SegLoss, WithAuxiliaryLoss

SMALL_ENCODERS = {"deeplab": "resnet18", "segnet": "vgg16_bn", "unet": "resnet18", "fpn": "resnet18",
                  "deeplabv3plus": "resnet18", "segformer": "mit_b0"}
TINY = ["--encoder", "conv", "--encoder-weights", "none", "--image-size", "32", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--progress", "off", "--lr", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_dataset(tmp_path_factory.mktemp("aux") / "data", seed=3, sizes={"train": 4, "validation": 2})


def test_every_registered_architecture_has_an_auxiliary_head() -> None:
    assert set(AUX_TAPS) == set(MODELS) == set(SMALL_ENCODERS)


@pytest.mark.parametrize("arch", sorted(SMALL_ENCODERS))
def test_auxiliary_head_reads_the_penultimate_stage_and_leaves_the_model_alone(arch: str) -> None:
    torch.manual_seed(0)
    spec = build_spec(arch, SMALL_ENCODERS[arch], image_size=64)
    model = build_model(spec, encoder_weights="none")
    trained = with_auxiliary(model, spec).train()
    x = torch.randn(2, 3, 64, 96)
    logits, aux = trained(x)
    assert logits.shape == aux.shape == (2, spec.num_classes, 64, 96)
    # the head's loss reaches the encoder: the penultimate stage's weights get a gradient from it alone
    aux.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.head.parameters())
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    # in eval mode the wrapper is the model: the same logits, no head run, nothing kept from the forward
    trained.eval()
    with torch.no_grad():
        assert torch.equal(trained(x), model(x))
    assert trained._features is None
    assert model.state_dict().keys() == build_model(spec, encoder_weights="none").state_dict().keys()


def test_auxiliary_loss_is_the_main_loss_plus_w_times_the_heads() -> None:
    seg = SegLoss("ce", ignore_index=255)
    logits, aux = torch.randn(2, 5, 8, 8), torch.randn(2, 5, 8, 8)
    target = torch.randint(0, 5, (2, 8, 8))
    target[0, 0] = 255
    loss = WithAuxiliaryLoss(seg, 0.4)((logits, aux), target)
    assert loss.item() == pytest.approx((seg(logits, target) + 0.4 * seg(aux, target)).item())


def test_fit_with_aux_loss_records_it_keeps_the_head_for_resume_and_exports_the_plain_model(
        data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(out), *TINY,
                                        "--epochs", "1", "--aux-loss", "0.5"])
        assert res.exit_code == 0, res.output
        assert "auxiliary FCN head on the encoder's penultimate stage (8 channels), its loss weighted 0.5" in res.output
        last = torch.load(out / "last.pth", weights_only=True)
        assert last["config"]["aux_loss"] == 0.5
        head = last["aux_head"]
        assert set(head) >= {"0.weight", "1.running_mean", "4.weight", "4.bias"}
        assert not any(k.startswith(("head.0", "model.")) for k in last["model"])
        # the optimizer holds the model's parameters and the head's (one group, model first)
        model, _ = load_model(out / "best_model.pth")  # strict: the model alone, as export and inference see it
        n_model, n_head = len(list(model.parameters())), 5  # conv, BN weight and bias, conv weight and bias
        assert len(last["optimizer"]["param_groups"][0]["params"]) == n_model + n_head

        # --resume restores the head: with lr 0 the resumed epoch leaves its convolutions as epoch 1 left them
        # (a head built afresh would hold its initial weights, which epoch 1 changed)
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--resume", str(out / "last.pth"), "--epochs", "2",
                                        "--lr", "0"])
        assert res.exit_code == 0, res.output
        resumed = torch.load(out / "last.pth", weights_only=True)
        assert resumed["epoch"] == 2 and resumed["config"]["aux_loss"] == 0.5
        for key in ("0.weight", "4.weight", "4.bias"):
            assert torch.equal(resumed["aux_head"][key], head[key])
        fresh = with_auxiliary(load_model(out / "best_model.pth")[0], model_spec(out)).head.state_dict()
        assert not torch.equal(fresh["4.weight"], head["4.weight"])


def model_spec(out: Path):
    from segtrain.training.checkpoint import Checkpoint

    return Checkpoint.load(out / "last.pth").spec


def test_training_loss_includes_the_auxiliary_term(data: Path, tmp_path: Path) -> None:
    with tiny_registered():
        plain = fit(tiny_config(data, tmp_path / "plain", epochs=1), log=lambda _: None)
        aux = fit(tiny_config(data, tmp_path / "aux", epochs=1, aux_loss=1.0), log=lambda _: None)
    assert plain.epochs_run == aux.epochs_run == 1
    first = {name: torch.load(tmp_path / name / "last.pth", weights_only=True)["history"][0]["train_loss"]
             for name in ("plain", "aux")}
    assert first["aux"] > 1.5 * first["plain"]  # two cross-entropies of near-uniform logits, not one


def test_resume_that_would_add_or_drop_the_head_is_refused(data: Path, tmp_path: Path) -> None:
    with tiny_registered():
        fit(tiny_config(data, tmp_path / "with", epochs=1, aux_loss=0.5), log=lambda _: None)
        fit(tiny_config(data, tmp_path / "without", epochs=1), log=lambda _: None)
        with pytest.raises(CheckpointError, match=r"was trained with an auxiliary head, so --aux-loss 0 cannot"):
            fit(tiny_config(data, tmp_path / "with", epochs=2, aux_loss=0.0), resume=tmp_path / "with" / "last.pth",
                log=lambda _: None)
        with pytest.raises(CheckpointError, match=r"was trained without an auxiliary head, so --aux-loss 0.4"):
            fit(tiny_config(data, tmp_path / "without", epochs=2, aux_loss=0.4),
                resume=tmp_path / "without" / "last.pth", log=lambda _: None)
        # a new weight for the same head continues, and says so
        lines: list[str] = []
        fit(tiny_config(data, tmp_path / "with", epochs=2, aux_loss=0.2), resume=tmp_path / "with" / "last.pth",
            log=lines.append)
        assert any(line.startswith("note: the auxiliary loss is weighted 0.2 from epoch 2 on (") and
                   line.endswith("trained with 0.5)") for line in lines), lines
    assert torch.load(tmp_path / "with" / "last.pth", weights_only=True)["config"]["aux_loss"] == 0.2


@pytest.mark.parametrize("value, message", [("-1", "--aux-loss must be at least 0"),
                                            ("nan", "--aux-loss must be a finite number, got 'nan'"),
                                            ("heavy", "--aux-loss must be a number, got 'heavy'")])
def test_bad_weights_are_one_line(value: str, message: str, data: Path, tmp_path: Path) -> None:
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(tmp_path / "r"), *TINY,
                                        "--aux-loss", value])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "r").exists()


def test_yaml_config_takes_it(data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text("aux-loss: 4e-1\nepochs: 1\n")
    with tiny_registered():
        res = CliRunner().invoke(main, ["fit", POOL_ARCH, "--data", str(data), "--out", str(tmp_path / "r"), *TINY,
                                        "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert torch.load(tmp_path / "r" / "last.pth", weights_only=True)["config"]["aux_loss"] == 0.4


def test_an_architecture_without_a_stage_for_it_is_refused(data: Path, tmp_path: Path) -> None:
    with tiny_registered(), pytest.MonkeyPatch.context() as mp:
        mp.delitem(AUX_TAPS, POOL_ARCH)
        with pytest.raises(ModelError, match=f"--aux-loss: {POOL_ARCH} has no auxiliary head"):
            fit(tiny_config(data, tmp_path / "r", epochs=1, aux_loss=0.5), log=lambda _: None)
    assert not (tmp_path / "r").exists()
