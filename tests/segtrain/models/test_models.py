"""Model registry: shapes, gradients, encoder weights (none / imagenet / file), real architectures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torchvision

from segtrain.contract import build_spec
from segtrain.models import CLASSIFIERS, DEFAULT_ENCODERS, INPUT_DIVISORS, MODELS, ModelError, build_model, load_model
from segtrain.models.encoders import host_reachable
from segtrain.training.checkpoint import Checkpoint, CheckpointError

NUM_CLASSES = 5  # background + the four default categories


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The module encoder weights files are loaded into."""
    return model.encoder.features if hasattr(model.encoder, "features") else model.encoder


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty weight caches and every download routed to a closed local port (refused at once)."""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")


class BaseModelTest:
    """Checks every architecture must pass; subclasses name the architecture and a small encoder."""

    arch: str
    encoder: str

    def spec(self, size: int = 64):
        return build_spec(self.arch, self.encoder, image_size=size)

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(cls.spec(cls), encoder_weights="none")

    @pytest.mark.parametrize("hw", [(64, 64), (96, 128)])
    def test_logits_at_input_size(self, model: torch.nn.Module, hw: tuple[int, int]) -> None:
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, *hw))
        assert out.shape == (2, NUM_CLASSES, *hw)
        assert torch.isfinite(out).all()

    def test_backward_reaches_every_parameter(self, model: torch.nn.Module) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        target = torch.randint(0, NUM_CLASSES, (2, 64, 64))
        torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), target).backward()
        no_grad = [n for n, p in model.named_parameters() if p.grad is None]
        not_finite = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
        assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
        assert not not_finite, f"non-finite gradients: {not_finite[:5]}"
        assert sum(int(p.grad.count_nonzero()) for p in model.parameters()) > 0.5 * sum(
            p.numel() for p in model.parameters())

    def test_weights_file_loads_strictly(self, model: torch.nn.Module, tmp_path: Path) -> None:
        source = {k: torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in encoder_of(model).state_dict().items()}
        path = tmp_path / "encoder.pth"
        torch.save(source, path)
        loaded = build_model(self.spec(), encoder_weights=str(path))
        for key, value in encoder_of(loaded).state_dict().items():
            torch.testing.assert_close(value, source[key], rtol=0, atol=0)

    def test_weights_file_that_does_not_fit(self, model: torch.nn.Module, tmp_path: Path) -> None:
        source = dict(encoder_of(model).state_dict())
        first = next(k for k in source if k.endswith("weight"))
        source[first] = torch.zeros(1)
        source.pop(list(source)[-1])
        path = tmp_path / "bad.pth"
        torch.save(source, path)
        with pytest.raises(ModelError) as err:
            build_model(self.spec(), encoder_weights=str(path))
        message = str(err.value)
        assert "\n" not in message and str(path) in message
        assert "1 missing" in message and "1 wrong shape" in message and first in message

    def test_imagenet_offline_fails_fast_in_one_line(self, offline: None) -> None:
        t0 = time.perf_counter()
        with pytest.raises(ModelError) as err:
            build_model(self.spec(), encoder_weights="imagenet")
        elapsed = time.perf_counter() - t0
        message = str(err.value)
        assert "\n" not in message and "--encoder-weights none" in message and "PATH" in message
        assert elapsed < 8, f"took {elapsed:.1f}s to give up"

    def test_checkpoint_round_trip(self, model: torch.nn.Module, tmp_path: Path) -> None:
        spec = self.spec()
        Checkpoint(spec=spec, model=model.state_dict(), epoch=1, metrics={"miou": 0.1}).save(tmp_path / "best.pth")
        rebuilt, ckpt = load_model(tmp_path / "best.pth")
        assert ckpt.spec == spec and ckpt.epoch == 1 and ckpt.miou == 0.1 and not rebuilt.training
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(x), model.eval()(x), rtol=0, atol=0)


class TestDeepLab(BaseModelTest):
    arch, encoder = "deeplab", "resnet18"

    def test_imagenet_from_local_cache(self, offline: None, tmp_path: Path) -> None:
        """smp's Hugging Face file, when cached, is used without touching the network."""
        import huggingface_hub.constants
        from safetensors.torch import save_file
        from segmentation_models_pytorch.encoders import encoders

        settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
        repo_dir = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{settings['repo_id'].replace('/', '--')}"
        snapshot = repo_dir / "snapshots" / settings["revision"]
        snapshot.mkdir(parents=True)
        reference = torchvision.models.resnet18().state_dict()
        save_file({k: v.contiguous() for k, v in reference.items() if not k.startswith("fc.")},
                  str(snapshot / "model.safetensors"))
        model = build_model(self.spec(), encoder_weights="imagenet")
        torch.testing.assert_close(model.encoder.conv1.weight, reference["conv1.weight"], rtol=0, atol=0)
        torch.testing.assert_close(model.encoder.layer4[1].bn2.running_var, reference["layer4.1.bn2.running_var"])

    def test_torchvision_resnet_file_drops_classifier(self, tmp_path: Path) -> None:
        reference = torchvision.models.resnet18().state_dict()  # has fc.weight / fc.bias
        torch.save(reference, tmp_path / "resnet18.pth")
        model = build_model(self.spec(), encoder_weights=str(tmp_path / "resnet18.pth"))
        torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])


class TestSegNet(BaseModelTest):
    arch, encoder = "segnet", "vgg16_bn"

    def test_input_not_divisible_by_32(self, model: torch.nn.Module) -> None:
        with pytest.raises(ValueError, match=r"divisible by 32, got 72x64 \(for example 96x64\)"):
            model.eval()(torch.zeros(1, 3, 72, 64))

    def test_imagenet_from_torch_hub_cache(self, offline: None, tmp_path: Path) -> None:
        """torchvision's VGG16-BN file in torch hub's cache is used without touching the network."""
        weights = torchvision.models.VGG16_BN_Weights.IMAGENET1K_V1
        reference = torchvision.models.vgg16_bn().state_dict()
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        cached.parent.mkdir(parents=True)
        torch.save(reference, cached)
        model = build_model(self.spec(), encoder_weights="imagenet")
        torch.testing.assert_close(model.encoder.features[41].weight, reference["features.41.weight"], rtol=0, atol=0)
        torch.testing.assert_close(model.encoder.features[1].running_mean, reference["features.1.running_mean"])


class TestUnet(BaseModelTest):
    arch, encoder = "unet", "resnet18"


class TestFPN(BaseModelTest):
    arch, encoder = "fpn", "resnet18"


class TestDeepLabV3Plus(BaseModelTest):
    arch, encoder = "deeplabv3plus", "resnet18"

    def test_output_stride_16(self, model: torch.nn.Module) -> None:
        assert INPUT_DIVISORS[self.arch] == model.encoder.output_stride == 16
        assert model.encoder.layer4[0].conv2.dilation == (2, 2)  # dilated past stride 16, as the paper


class TestSegformer(BaseModelTest):
    arch, encoder = "segformer", "resnet18"  # any smp encoder; its own Mix Transformer below


def test_segformer_default_is_the_mix_transformer() -> None:
    assert DEFAULT_ENCODERS["segformer"] == "mit_b0"
    model = build_model(build_spec("segformer", "mit_b0", image_size=64), encoder_weights="none").eval()
    assert 3.5e6 < sum(p.numel() for p in model.parameters()) < 3.9e6  # SegFormer-B0: 3.7M parameters
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, NUM_CLASSES, 64, 96)


@pytest.mark.parametrize("arch", ["fpn", "deeplabv3plus", "segformer"])  # smp's U-Net resizes its skips instead
def test_input_not_divisible_is_refused(arch: str) -> None:
    model = build_model(build_spec(arch, "resnet18", image_size=64), encoder_weights="none").eval()
    with pytest.raises(RuntimeError, match=f"divisible by {INPUT_DIVISORS[arch]}"):
        model(torch.zeros(1, 3, 64 + INPUT_DIVISORS[arch] // 2, 64))


def test_registry_errors_list_valid_names() -> None:
    from segtrain.training.config import ARCHITECTURES

    with pytest.raises(ModelError, match="unknown model 'pspnet'; choose from deeplab, segnet, unet, fpn, "
                                         "deeplabv3plus, segformer"):
        build_model(build_spec("pspnet", "resnet18"), encoder_weights="none")
    with pytest.raises(ModelError, match="unknown U-Net encoder 'vgg17'; smp encoders include .*resnet18"):
        build_model(build_spec("unet", "vgg17"), encoder_weights="none")
    with pytest.raises(ModelError, match="unknown SegNet encoder 'resnet18'; choose from vgg16_bn, vgg16"):
        build_model(build_spec("segnet", "resnet18"), encoder_weights="none")
    with pytest.raises(ModelError, match="unknown DeepLabV3 encoder 'vgg17'.*resnet50"):
        build_model(build_spec("deeplab", "vgg17"), encoder_weights="none")
    assert set(MODELS) == set(DEFAULT_ENCODERS) == set(INPUT_DIVISORS) == set(CLASSIFIERS) == set(ARCHITECTURES)


def test_weights_file_missing_or_not_weights(tmp_path: Path) -> None:
    spec = build_spec("segnet", "vgg16_bn", image_size=64)
    with pytest.raises(ModelError, match="encoder weights file not found"):
        build_model(spec, encoder_weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="junk.pth: not a readable weights file"):
        build_model(spec, encoder_weights=str(tmp_path / "junk.pth"))


def test_unreachable_host_is_bounded_by_the_timeout() -> None:
    t0 = time.perf_counter()
    assert not host_reachable("https://127.0.0.1:9/file", timeout=0.5)
    assert time.perf_counter() - t0 < 1.5


def test_checkpoint_whose_weights_do_not_fit_its_spec(tmp_path: Path) -> None:
    small = build_model(build_spec("deeplab", "resnet18", image_size=64), encoder_weights="none")
    spec = build_spec("deeplab", "resnet34", image_size=64)
    Checkpoint(spec=spec, model=small.state_dict()).save(tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match=r"m.pth: weights do not fit a deeplab/resnet34 model"):
        load_model(tmp_path / "m.pth")


@pytest.mark.slow
def test_real_deeplabv3_resnet50() -> None:
    """The default DeepLabV3 is the ResNet-50 one: the encoder matches torchvision's ResNet-50 less its fc."""
    assert DEFAULT_ENCODERS["deeplab"] == "resnet50"
    model = build_model(build_spec("deeplab", "resnet50", image_size=64), encoder_weights="none").eval()
    resnet50 = torchvision.models.resnet50()
    expected = sum(p.numel() for n, p in resnet50.named_parameters() if not n.startswith("fc."))
    assert expected == 23_508_032
    assert sum(p.numel() for p in model.encoder.parameters()) == expected
    conv_bn = lambda cin, cout, k: cin * cout * k * k + 2 * cout  # noqa: E731  (bias-free conv + BN)
    aspp = conv_bn(2048, 256, 1) + 3 * conv_bn(2048, 256, 3) + conv_bn(2048, 256, 1) + conv_bn(5 * 256, 256, 1)
    head = conv_bn(256, 256, 3) + (256 * NUM_CLASSES + NUM_CLASSES)
    assert sum(p.numel() for p in model.parameters()) == expected + aspp + head == 39_634_757
    assert model.encoder.layer4[0].conv2.dilation == (4, 4)  # output stride 8
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, NUM_CLASSES, 64, 96)


@pytest.mark.slow
@pytest.mark.parametrize("encoder,tv_builder,features_params",
                         [("vgg16_bn", torchvision.models.vgg16_bn, 14_723_136),
                          ("vgg16", torchvision.models.vgg16, 14_714_688)])
def test_real_segnet_vgg16_takes_torchvision_weights(encoder: str, tv_builder, features_params: int,
                                                    tmp_path: Path) -> None:
    """A whole torchvision VGG16 state dict (features + classifier) loads key for key into the encoder."""
    assert DEFAULT_ENCODERS["segnet"] == "vgg16_bn"
    reference = tv_builder().state_dict()
    torch.save(reference, tmp_path / f"{encoder}.pth")
    model = build_model(build_spec("segnet", encoder, image_size=64), encoder_weights=str(tmp_path / f"{encoder}.pth"))
    assert sum(p.numel() for p in model.encoder.parameters()) == features_params
    for key, value in model.encoder.features.state_dict().items():
        torch.testing.assert_close(value, reference[f"features.{key}"], rtol=0, atol=0)
    assert sum(1 for m in model.modules() if isinstance(m, torch.nn.MaxUnpool2d)) == 5


def test_weights_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "hook": Path("x")}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="evil.pth: refused, not a plain state dict"):
        build_model(build_spec("deeplab", "resnet18", image_size=64), encoder_weights=str(tmp_path / "evil.pth"))
