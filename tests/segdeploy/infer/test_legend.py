"""legend.png in every output folder, in the model's palette; the compact legend on overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner
from colour_models import build_colour_model, half_image, read_png, save

from segdeploy.cli import main
from segdeploy.infer.batch.outputs import output_paths
from segdeploy.infer.legend import legend_image, legend_lines, swatch_box
from segtrain.contract import build_spec


def test_legend_swatches_are_the_spec_palette_one_row_per_class() -> None:
    spec = build_spec("deeplab", "resnet18", categories=((1, "person"), (17, "cat"), (37, "sports ball"),
                                                         (84, "book"), (62, "chair")))
    image = legend_image(spec)
    assert image.ndim == 3 and image.shape[2] == 3
    for k, colour in enumerate(spec.palette):
        rows, cols = swatch_box(k)
        swatch = image[rows, cols].reshape(-1, 3)
        assert (swatch == colour).all(), (k, colour)
        assert rows.stop <= image.shape[0] and cols.stop < image.shape[1]
    assert legend_lines(spec)[4] == "4  book  (COCO id 84)" and legend_lines(spec)[0] == "0  background  (COCO id 0)"
    # text beside each swatch: the row has dark pixels right of the swatch
    for k in range(spec.num_classes):
        rows, cols = swatch_box(k)
        assert (image[rows, cols.stop + 10:] < 100).any(), k


def test_every_output_folder_gets_the_legend_and_overlays_get_one_with_legend(tmp_path: Path) -> None:
    model = build_colour_model(tmp_path / "colour.onnx")
    save(half_image(120, 160, 1), tmp_path / "in" / "a.png")
    save(half_image(120, 160, 1), tmp_path / "in" / "sub" / "deeper" / "b.png")
    for out, extra in (("plain", []), ("legend", ["--legend"])):
        res = CliRunner().invoke(main, ["batch", str(tmp_path / "in"), "--out", str(tmp_path / out), "--model",
                                        str(model), "--no-progress", *extra])
        assert res.exit_code == 0, res.output
    legends = sorted(p.relative_to(tmp_path / "plain").as_posix() for p in (tmp_path / "plain").rglob("legend.png"))
    assert legends == ["legend.png", "sub/deeper/legend.png"]  # OUT and each folder that holds outputs
    from segdeploy.infer.runtime import read_model_metadata

    spec = read_model_metadata(model).spec
    np.testing.assert_array_equal(read_png(tmp_path / "plain" / "legend.png"), legend_image(spec))
    plain = read_png(output_paths(tmp_path / "plain", Path("a.png")).files["overlay"]).astype(int)
    marked = read_png(output_paths(tmp_path / "legend", Path("a.png")).files["overlay"]).astype(int)
    differs = np.abs(plain - marked).max(axis=2) > 40
    ys, xs = np.nonzero(differs)
    assert len(ys) and ys.max() < 40 and xs.max() < 80  # the top-left corner only
