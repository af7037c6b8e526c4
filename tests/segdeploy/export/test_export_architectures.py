"""U-Net, FPN, DeepLabV3+ and SegFormer (smp) go the whole way: exported with dynamic batch, height and width,
verified against PyTorch, and run by `segdeploy batch` to the masks PyTorch gives (ResNet-18 encoders at 64 px;
SegFormer with its own Mix Transformer, MiT-B0)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from segdeploy.cli import main as segdeploy
from segdeploy.export.exporter import ExportConfig, export_checkpoint
from segdeploy.infer.runtime import OnnxModel
from segtrain.contract import logits_to_mask, preprocess
from segtrain.evaluation import open_split_for
from segtrain.models import INPUT_DIVISORS, load_model

ARCHS = [("unet", "resnet18"), ("fpn", "resnet18"), ("deeplabv3plus", "resnet18"), ("segformer", "mit_b0")]


@pytest.mark.slow
@pytest.mark.parametrize("arch,encoder", ARCHS)
def test_exported_verified_and_run_by_segdeploy(arch: str, encoder: str, make_checkpoint, sample_root: Path,
                                                tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "runs" / arch / "best_model.pth", arch, encoder, 64, sample_root, steps=2)
    result = export_checkpoint(ckpt, ExportConfig(out=tmp_path / "exported", verify_images=4), echo=lambda _: None)
    assert result.report is not None and result.report.passed, result.report.summary()
    path = tmp_path / "exported" / f"{arch}.onnx"
    graph = onnx.load(str(path)).graph
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (graph.input[0], graph.output[0])]
    assert dims == [["batch", 3, "height", "width"], ["batch", 5, "height", "width"]]

    model, loaded = load_model(ckpt)
    split = open_split_for(loaded.spec, sample_root, "validation")
    images = [split.load_image(i) for i in range(3)]
    d = INPUT_DIVISORS[arch]
    session = OnnxModel(path, provider="cpu")
    for size in ((3 * d, 2 * d), (2 * d, 4 * d)):  # batch 3, sizes unlike the export's
        x = preprocess(images, replace(loaded.spec, input_size=size))
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = session.run(x)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9999

    out = tmp_path / "preds"
    res = CliRunner().invoke(segdeploy, ["batch", str(split.image_dir), "--out", str(out), "--model", str(path),
                                         "--provider", "cpu"])
    assert res.exit_code == 0, res.output
    name = split.records[0].file_name
    with Image.open(out / f"{name}.mask.png") as im:
        mask = np.asarray(im)
    with torch.no_grad():
        logits = model(torch.from_numpy(preprocess([images[0]], loaded.spec))).numpy()[0]
    torch_mask = logits_to_mask(logits, images[0].shape[:2])
    assert mask.shape == images[0].shape[:2] and (mask == torch_mask).mean() >= 0.999
