"""The torch-free model-input contract."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from fuzzing import budget
from hypothesis import given
from hypothesis import strategies as st

from segtrain import contract
from segtrain.contract import (
    ModelSpec,
    argmax_planes,
    build_spec,
    colorize,
    default_palette,
    logits_to_mask,
    logits_to_mask_and_confidence,
    logits_to_probabilities,
    normalize,
    overlay,
    preprocess,
    relative_luminance,
    resize_logits,
)


def test_contract_and_data_modules_do_not_import_torch():
    code = ("import sys, segtrain, segtrain.contract, segtrain.data.images, segtrain.metrics, segtrain.data.coco, "
            "segtrain.evaluation, segtrain.data.dataset_report, segtrain.data.synthetic; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'albumentations')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_spec_round_trips_through_dict_and_metadata():
    spec = build_spec("segnet", "vgg16_bn", image_size=(96, 128))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    meta = spec.to_metadata()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    assert ModelSpec.from_metadata(meta) == spec
    assert spec.classes == ("background", "person", "cat", "sports ball", "book")
    assert spec.coco_ids == (0, 1, 17, 37, 84)
    assert spec.palette[0] == (0, 0, 0) and len(set(spec.palette)) == 5


def test_spec_rejects_inconsistent_fields():
    with pytest.raises(ValueError, match="COCO ids"):
        ModelSpec(arch="a", encoder="b", classes=("bg", "x"), coco_ids=(0,))
    with pytest.raises(ValueError, match="resize rule"):
        ModelSpec(arch="a", encoder="b", classes=("bg",), coco_ids=(0,), resize="letterbox")


def test_preprocess_normalises_with_the_spec():
    spec = build_spec("deeplab", "resnet18", image_size=(8, 12))
    image = np.full((16, 24, 3), 255, np.uint8)
    x = preprocess(image, spec)
    assert x.shape == (1, 3, 8, 12) and x.dtype == np.float32
    expected = (1.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-6)
    batch = preprocess([image, image[:5, :7]], spec)
    assert batch.shape == (2, 3, 8, 12)


def test_preprocess_rejects_non_rgb():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        preprocess(np.zeros((4, 4), np.uint8), build_spec("deeplab", "resnet18", image_size=8))


def test_resize_logits_matches_opencv_bilinear():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7, 9)).astype(np.float32)
    ours = resize_logits(logits, (20, 31))
    ref = cv2.resize(logits.transpose(1, 2, 0), (31, 20), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_logits_to_mask_in_bands_equals_whole_image_argmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 16, 16)).astype(np.float32)
    whole = resize_logits(logits, (301, 203)).argmax(0)
    banded = logits_to_mask(logits, (301, 203), max_band_pixels=999)
    assert banded.dtype == np.uint8 and banded.shape == (301, 203)
    np.testing.assert_array_equal(banded, whole)


def test_logits_to_mask_places_a_square_where_it_was():
    logits = np.zeros((2, 8, 8), np.float32)
    logits[0] = 5.0
    logits[1, 2:6, 2:6] = 10.0  # class 1 on the centre half: the boundary is half-way between pixel centres
    mask = logits_to_mask(logits, (80, 80))
    assert mask[40, 40] == 1 and mask[5, 5] == 0 and mask[75, 40] == 0
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (20, 59, 20, 59)


def smooth_logits(classes: int, cells: tuple[int, int], size: tuple[int, int], seed: int) -> np.ndarray:
    """Logits as a model gives them: random scores on a coarse grid of `cells`, resized smoothly to `size`."""
    coarse = np.random.default_rng(seed).normal(size=(*cells, classes)).astype(np.float32)
    fine = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC).reshape(*size, classes)
    return np.ascontiguousarray(fine.transpose(2, 0, 1))


@given(classes=st.integers(2, 6), cells=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       logit_size=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       size=st.tuples(st.integers(1, 150), st.integers(1, 150)), keep=st.tuples(st.floats(0, 1), st.floats(0, 1)),
       band=st.sampled_from([None, 1, 7, 500]), seed=st.integers(0, 2**16))
@budget(40)
def test_the_mask_is_the_argmax_of_the_resized_logits(classes: int, cells: tuple[int, int],
                                                      logit_size: tuple[int, int], size: tuple[int, int],
                                                      keep: tuple[float, float], band: int | None, seed: int) -> None:
    """Smooth or noisy, up or down, whole or its top-left part, in any chunks: the arg-max of resize_logits."""
    logits = smooth_logits(classes, cells, logit_size, seed)
    kept = (max(1, round(keep[0] * size[0])), max(1, round(keep[1] * size[1])))
    expected = resize_logits(logits, size)[:, :kept[0], :kept[1]].argmax(0)
    np.testing.assert_array_equal(logits_to_mask(logits, size, max_band_pixels=band, keep=kept), expected)
    np.testing.assert_array_equal(logits_to_mask_and_confidence(logits, size, band, kept)[0], expected)


def test_only_pixels_near_a_class_boundary_are_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Smooth logits never resize every class plane (the slow way); noisy ones do."""
    resized_whole = []
    real = contract._mask_from_bands
    monkeypatch.setattr(contract, "_mask_from_bands", lambda *a, **k: resized_whole.append(1) or real(*a, **k))
    logits = smooth_logits(5, (3, 3), (128, 128), seed=5)  # 2.6% of the cells have taps that disagree
    mask = logits_to_mask(logits, (480, 640))
    assert resized_whole == [] and len(np.unique(mask)) > 2
    np.testing.assert_array_equal(mask, real(logits, (480, 640)))
    noisy = np.random.default_rng(6).normal(size=(5, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(logits_to_mask(noisy, (100, 90)), resize_logits(noisy, (100, 90)).argmax(0))
    assert resized_whole == [1]
    scores = np.zeros((256, 60, 60), np.float32)
    scores[255, :30], scores[7, 30:] = 1.0, 1.0  # class 255 (a model of 256 classes) is not taken for a mark
    mask = logits_to_mask(scores, (90, 90))
    np.testing.assert_array_equal(mask, resize_logits(scores, (90, 90)).argmax(0))
    assert set(np.unique(mask)) == {7, 255}
    assert resized_whole == [1]
    monkeypatch.setattr(contract, "MAX_BAND_VALUES", logits.size - 1)  # logits as large as a tile canvas: in bands
    np.testing.assert_array_equal(logits_to_mask(logits, (480, 640)), real(logits, (480, 640)))
    assert resized_whole == [1, 1]


def test_colorize_and_overlay():
    palette = ((0, 0, 0), (255, 0, 0))
    mask = np.array([[0, 1], [255, 1]], np.uint8)
    colour = colorize(mask, palette)
    assert colour[0, 1].tolist() == [255, 0, 0] and colour[1, 0].tolist() == [255, 255, 255]
    image = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(image, mask, palette, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100]  # background keeps the photo
    assert out[0, 1].tolist() == [178, 50, 50]
    with pytest.raises(ValueError):
        overlay(image, mask[:1], palette)


def test_normalize_is_the_standardisation_formula_exactly():
    spec = build_spec("deeplab", "resnet18", image_size=8)
    image = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    expected = ((image.astype(np.float32) / np.float32(255.0) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_array_equal(normalize(image, spec), expected)


def test_one_band_and_many_bands_agree_and_softmax_views_match_numpy():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 13, 17)).astype(np.float32)
    size = (151, 97)
    whole, banded = logits_to_mask(logits, size), logits_to_mask(logits, size, max_band_pixels=500)
    np.testing.assert_array_equal(whole, banded)
    np.testing.assert_array_equal(whole, resize_logits(logits, size).argmax(0))
    resized = resize_logits(logits, size).astype(np.float64)
    softmax = np.exp(resized - resized.max(0)) / np.exp(resized - resized.max(0)).sum(0)
    for bands in (None, 500):
        mask, confidence = logits_to_mask_and_confidence(logits, size, max_band_pixels=bands)
        np.testing.assert_array_equal(mask, whole)
        np.testing.assert_allclose(confidence, softmax.max(0), atol=1e-5)
        np.testing.assert_allclose(logits_to_probabilities(logits, size, max_band_pixels=bands), softmax, atol=1e-5)
    kept = logits_to_mask(logits, size, keep=(100, 60), max_band_pixels=500)
    np.testing.assert_array_equal(kept, whole[:100, :60])


def test_argmax_ties_go_to_the_lower_class_like_numpy():
    planes = [np.array([[1, 2, 3]], np.float32), np.array([[1, 5, 3]], np.float32), np.array([[0, 5, 3]], np.float32)]
    index, best = argmax_planes(planes)
    np.testing.assert_array_equal(index, np.stack(planes).argmax(0))
    np.testing.assert_array_equal(best, [[1, 5, 3]])


def test_the_default_palette_stands_out_on_photos() -> None:
    palette = default_palette(21)
    assert palette[0] == (0, 0, 0) and palette == default_palette(21)  # deterministic
    assert min(relative_luminance(c) for c in palette[1:]) >= 0.3  # no navy (0.02), no maroon (0.05)
    assert relative_luminance((0, 0, 128)) < 0.03 and relative_luminance((255, 255, 255)) == pytest.approx(1.0)
    first = palette[1:9]
    distances = [np.abs(np.subtract(a, b)).max() for i, a in enumerate(first) for b in first[i + 1:]]
    assert min(distances) >= 60  # the first eight are told apart at a glance
    # Blended over a dark photo at alpha 0.5, every class colour is still clearly visible.
    dark = np.full((1, 1, 3), 30, np.uint8)
    for k, colour in enumerate(palette[1:9], start=1):
        blended = overlay(dark, np.full((1, 1), k, np.uint8), palette, alpha=0.5)[0, 0]
        assert relative_luminance(blended) > 3 * relative_luminance(dark[0, 0]), colour
