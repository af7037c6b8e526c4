"""The model-input contract: what a model expects and how its output becomes a mask.

This module is the single definition of pre- and post-processing. Training-time evaluation,
`segtrain evaluate`, ONNX verification and `segdeploy batch` all call these functions, and the
spec travels inside checkpoints and ONNX files. It must stay importable without torch
(`segdeploy batch` runs on machines that have none), so only NumPy and OpenCV are used here.

Resize rule ("stretch", what segtrain trains with): the image is resized to the model's input size ignoring
aspect ratio, with area interpolation when both sides shrink and bilinear otherwise. Logits are resized back
to the original size with bilinear interpolation (half-pixel centres, as torch's
``align_corners=False``) *before* the arg-max, in horizontal strips so memory stays bounded for
very large images.
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from numbers import Integral, Real

import cv2
import numpy as np

from segtrain.common.limits import MAX_CLASS_NAME_CHARS, MAX_CLASSES, MAX_INPUT_SIDE, MIN_INPUT_SIDE
from segtrain.common.outside_text import parse_json

IGNORE_INDEX = 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND = "background"
# Default target categories: (COCO id, name); background is index 0 and has COCO id 0.
DEFAULT_CATEGORIES: tuple[tuple[int, str], ...] = ((1, "person"), (17, "cat"), (37, "sports ball"), (84, "book"))
# How training fed photos to the model (the spec's `resize`): "stretch" (whole photos resized to the input size,
# ignoring aspect ratio: every segtrain model) or "crop" (windows of the input size cut from photos at their own
# scale, as MMSegmentation's crop training does). Inference follows the rule by default (`--tile auto`).
RESIZE_RULES = ("stretch", "crop")
METADATA_PREFIX = "segtrain."  # ONNX metadata_props keys of the ModelSpec
PROVENANCE_PREFIX = "segdeploy."  # ONNX metadata_props keys of the Provenance


# Each class colour of the default palette has at least this relative luminance (WCAG's), so it stands out when
# blended over a photo; the PASCAL VOC map it replaces gave class 4 navy (0.02) and class 1 maroon (0.05).
MIN_PALETTE_LUMINANCE = 0.3
_GOLDEN = 0.618033988749895


def relative_luminance(colour: Sequence[int]) -> float:
    """WCAG 2 relative luminance of an sRGB colour, 0 (black) to 1 (white)."""
    def linear(v: int) -> float:
        v = v / 255.0
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(v) for v in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Class 0 black, then bright colours whose hues are a golden-ratio turn apart (red first), each lightened
    towards white until its luminance is at least MIN_PALETTE_LUMINANCE."""
    colours = [(0, 0, 0)]
    for k in range(1, n):
        base = colorsys.hsv_to_rgb(((k - 1) * _GOLDEN) % 1.0, 0.8, 1.0)
        for step in range(51):
            colour = tuple(round(255 * (v + (1 - v) * step / 50)) for v in base)
            if relative_luminance(colour) >= MIN_PALETTE_LUMINANCE:
                break
        colours.append(colour)
    return tuple(colours)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sequence(name: str, value: object, length: int | None = None) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list, got {_short(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} values, got {_short(value)}")
    return tuple(value)


def _integer(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ValueError(f"{name}: expected integers {bounds}, got {_short(value)}")
    return int(value)


def _real(name: str, value: object, positive: bool = False) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or \
            (positive and value <= 0):
        raise ValueError(f"{name}: expected {'positive ' if positive else ''}finite numbers, got {_short(value)}")
    return float(value)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to feed a model and read its output; stored in checkpoints and ONNX."""

    arch: str
    encoder: str
    classes: tuple[str, ...]
    coco_ids: tuple[int, ...]
    input_size: tuple[int, int] = (512, 512)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    resize: str = "stretch"
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        """Normalise containers (specs read back from JSON compare equal) and refuse values no model can have.

        A spec comes from checkpoints and ONNX metadata made elsewhere, so every value is checked
        here, once: masks are uint8 with 255 as the ignore index, so 1..255 classes; colours of
        three 0..255 values; a sane input size; finite mean and positive finite std.
        """
        set_ = object.__setattr__
        classes = _sequence("classes", self.classes)
        if not all(isinstance(c, str) and c for c in classes):
            raise ValueError("classes must be non-empty names")
        if len(classes) > MAX_CLASSES:  # before anything walks them
            raise ValueError(f"{len(classes)} classes; a model has 1 to {MAX_CLASSES} (class indices are uint8 "
                             f"mask values below the ignore index {self.ignore_index})")
        long = next((i for i, c in enumerate(classes) if len(c) > MAX_CLASS_NAME_CHARS), None)
        if long is not None:
            raise ValueError(f"classes[{long}]: a name of {len(classes[long])} characters (at most "
                             f"{MAX_CLASS_NAME_CHARS})")
        set_(self, "classes", classes)
        set_(self, "coco_ids", tuple(_integer(f"coco_ids[{i}]", c, 0) for i, c in
                                     enumerate(_sequence("coco_ids", self.coco_ids))))
        set_(self, "input_size", tuple(_integer("input_size", s, MIN_INPUT_SIDE, MAX_INPUT_SIDE) for s in
                                       _sequence("input_size", self.input_size, 2)))
        set_(self, "mean", tuple(_real("mean", m) for m in _sequence("mean", self.mean, 3)))
        set_(self, "std", tuple(_real("std", v, positive=True) for v in _sequence("std", self.std, 3)))
        palette = _sequence("palette", self.palette) or default_palette(len(classes))
        set_(self, "palette", tuple(tuple(_integer("palette", v, 0, 255) for v in _sequence("palette colour", c, 3))
                                    for c in palette))
        set_(self, "ignore_index", _integer("ignore_index", self.ignore_index, 0, 255))
        if not isinstance(self.arch, str) or not isinstance(self.encoder, str):
            raise ValueError("arch and encoder must be names")
        if not 1 <= len(classes) <= min(MAX_CLASSES, self.ignore_index):
            raise ValueError(f"{len(classes)} classes; a model has 1 to {MAX_CLASSES} (class indices are uint8 "
                             f"mask values below the ignore index {self.ignore_index})")
        if len(self.coco_ids) != len(classes):
            raise ValueError(f"{len(classes)} classes but {len(self.coco_ids)} COCO ids")
        if len(self.palette) < len(classes):
            raise ValueError(f"palette has {len(self.palette)} colours for {len(classes)} classes")
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {_short(self.resize)}; known: {', '.join(RESIZE_RULES)}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        missing = {"arch", "encoder", "classes", "coco_ids"} - set(d)
        if missing:
            raise ValueError(f"model spec lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_metadata(self) -> dict[str, str]:
        """One metadata entry per field, JSON-encoded (ONNX metadata_props are str -> str)."""
        return {METADATA_PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelSpec:
        d = {}
        for key, text in props.items():
            if key.startswith(METADATA_PREFIX):
                d[key[len(METADATA_PREFIX):]] = parse_json(text, key)  # OutsideTextError is a ValueError
        return cls.from_dict(d)


@dataclass(frozen=True)
class Provenance:
    """Where an exported model's weights came from and what was done to them (ONNX metadata, not the spec).

    Stored beside the spec in metadata_props as ``segdeploy.<field>`` entries, JSON-encoded.
    `checkpoint_sha256` identifies the checkpoint, so an export of the same weights is known to be
    up to date; `quantization` describes an INT8 variant's settings.
    """

    precision: str = "fp32"
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    epoch: int | None = None
    val_miou: float | None = None
    exporter: str | None = None
    quantization: dict | None = None

    def to_metadata(self) -> dict[str, str]:
        return {PROVENANCE_PREFIX + k: json.dumps(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> Provenance:
        """The provenance in `props`; entries that are missing, unknown, not JSON or of the wrong type are left out."""
        values = {}
        for key, text in props.items():
            name = key[len(PROVENANCE_PREFIX):]
            if key.startswith(PROVENANCE_PREFIX) and name in _PROVENANCE_TYPES:
                try:
                    value = json.loads(text)
                except (json.JSONDecodeError, RecursionError):
                    continue
                if isinstance(value, _PROVENANCE_TYPES[name]) and not isinstance(value, bool) and \
                        (not isinstance(value, float) or math.isfinite(value)):
                    values[name] = value
        return cls(**values)


# The JSON types of Provenance's fields (None is the default of all but precision).
_PROVENANCE_TYPES: dict[str, type | tuple[type, ...]] = {
    "precision": str, "checkpoint": str, "checkpoint_sha256": str, "epoch": int, "val_miou": (int, float),
    "exporter": str, "quantization": dict}


def build_spec(arch: str, encoder: str, categories: Sequence[tuple[int, str]] = DEFAULT_CATEGORIES,
               image_size: int | tuple[int, int] = 512) -> ModelSpec:
    """A spec with background at index 0 followed by `categories` (COCO id, name) in order."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return ModelSpec(arch=arch, encoder=encoder,
                     classes=(BACKGROUND, *(name for _, name in categories)),
                     coco_ids=(0, *(cid for cid, _ in categories)), input_size=size)


# --------------------------------------------------------------------------------------------
# Pre-processing


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxWx3 uint8 image to (height, width) following the "stretch" rule."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrinking = h < image.shape[0] and w < image.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class mask (never invents classes)."""
    h, w = size
    if mask.shape[:2] == (h, w):
        return mask
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)


def normalize(image: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 3xHxW, scaled to [0, 1] then standardised by the spec.

    Written plane by plane into the output (the same float32 operations as ``(x / 255 - mean) / std``,
    so the same numbers, without full-size temporaries).
    """
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    for c in range(3):
        plane = out[c]
        np.divide(image[..., c], np.float32(255.0), out=plane, dtype=np.float32)
        plane -= np.float32(spec.mean[c])
        plane /= np.float32(spec.std[c])
    return out


def preprocess(images: np.ndarray | Iterable[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """RGB uint8 image(s) of any size -> float32 NCHW batch at the spec's input size."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    batch = [normalize(resize_image(_as_rgb(im), spec.input_size), spec) for im in images]
    return np.stack(batch)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    return image


# --------------------------------------------------------------------------------------------
# Post-processing


def _linear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights for half-pixel bilinear resampling of n_in samples to n_out."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    return lo, hi, frac


def resize_logits(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of CxHxW logits to (height, width) (for tests and small outputs)."""
    return _resize_rows(logits, size, 0, size[0])


def _resize_rows(logits: np.ndarray, size: tuple[int, int], r0: int, r1: int) -> np.ndarray:
    c, h, w = logits.shape
    out_h, out_w = size
    ylo, yhi, yf = _linear_taps(out_h, h)
    xlo, xhi, xf = _linear_taps(out_w, w)
    rows = slice(r0, r1)
    top, bottom = logits[:, ylo[rows]], logits[:, yhi[rows]]
    fy = yf[rows][None, :, None]
    band = top + (bottom - top) * fy  # C x (r1-r0) x w
    left, right = band[:, :, xlo], band[:, :, xhi]
    return left + (right - left) * xf[None, None, :]


# Resized logits held at once while post-processing: 2^23 float32 values (32 MiB), whatever the class count.
MAX_BAND_VALUES = 1 << 23


def logit_bands(logits: np.ndarray, size: tuple[int, int], keep: tuple[int, int] | None = None,
                max_band_pixels: int | None = None) -> Iterator[tuple[slice, list[np.ndarray]]]:
    """CxHxW logits resized (bilinear, half-pixel centres) to `size`, as bands of output rows.

    Yields (rows, one float32 plane per class). Only the top-left `keep` (height, width) of the
    resized grid is produced (default: all of it). When the output fits one band (at most
    `max_band_pixels`, by default MAX_BAND_VALUES over the class count) OpenCV resizes each plane
    on both axes; larger outputs are interpolated vertically here, band by band, then horizontally by
    OpenCV (the same rule; values agree to float rounding), so memory stays bounded for huge images.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected CxHxW logits, got shape {logits.shape}")
    logits = logits.astype(np.float32, copy=False)
    c, h, w = logits.shape
    out_h, out_w = size
    keep_h, keep_w = keep or size
    band = max(1, (max_band_pixels or MAX_BAND_VALUES // max(c, 1)) // max(out_w, 1))
    if band >= keep_h:
        yield slice(0, keep_h), [_resize_plane(logits[k], (out_h, out_w))[:keep_h, :keep_w] for k in range(c)]
        return
    ylo, yhi, yf = _linear_taps(out_h, h)
    for r0 in range(0, keep_h, band):
        rows = slice(r0, min(keep_h, r0 + band))
        top, bottom = logits[:, ylo[rows]], logits[:, yhi[rows]]
        vertical = top + (bottom - top) * yf[rows][None, :, None]  # C x rows x w
        yield rows, [_resize_plane(vertical[k], (vertical.shape[1], out_w))[:, :keep_w] for k in range(c)]


def _resize_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if plane.shape == tuple(size):
        return plane
    return cv2.resize(np.ascontiguousarray(plane), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


# OpenCV 5 reads a Python number beside an array of shape (1, 1) or (4, 1) as that array's 4-element Scalar, not
# as a value for every pixel: cv2.bitwise_and(a, 2) of a 1x1 array gives a 4x1 one, cv2.divide(1.0, a) garbage.
# So operations of an array with a number use NumPy here (a 1-pixel or a 4x1-pixel image got a wrong mask).


def argmax_planes(planes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 index of the largest plane per pixel, that largest value); ties go to the lower index.

    A running maximum in OpenCV: several times faster than NumPy's arg-max over a class axis.
    """
    best = planes[0].copy()
    index = np.zeros(best.shape, np.uint8)
    for k in range(1, len(planes)):
        greater = cv2.compare(planes[k], best, cv2.CMP_GT)  # 255 where class k wins so far
        cv2.bitwise_and(index, cv2.bitwise_not(greater), dst=index)
        cv2.bitwise_or(index, np.bitwise_and(greater, np.uint8(k)), dst=index)  # NumPy: see above
        cv2.max(best, planes[k], dst=best)
    return index, best


def _exp_sum(planes: Sequence[np.ndarray], best: np.ndarray) -> np.ndarray:
    """Sum over classes of exp(logit - max): the softmax denominator, without overflow."""
    total = np.zeros_like(best)
    tmp = np.empty_like(best)
    for plane in planes:
        cv2.subtract(plane, best, dst=tmp)
        cv2.exp(tmp, dst=tmp)
        cv2.add(total, tmp, dst=total)
    return total


def logits_to_mask(logits: np.ndarray, size: tuple[int, int], max_band_pixels: int | None = None,
                   keep: tuple[int, int] | None = None) -> np.ndarray:
    """CxHxW logits -> uint8 class mask of `size` (height, width): the arg-max of the logits resized (bilinear,
    half-pixel centres; ties to the lower class), only the top-left `keep` of it (default: all).

    Without resizing every class plane: each output pixel is a weighted sum, with weights >= 0, of its four
    source pixels (its bilinear taps), and such a sum of score vectors whose largest entry is the same class has
    that class largest too. So a pixel whose four taps share their arg-max takes it, and only the pixels whose
    taps disagree (near a class boundary: about 1% of a 640x480 coco-mini photo's) are interpolated, with
    `resize_logits`'s arithmetic, at most `max_band_pixels` (default MAX_BAND_VALUES over the class count) at
    a time; logits noisier than MAX_UNSURE_SHARE, or larger than MAX_BAND_VALUES (a tile canvas), are resized
    band by band as before (`_mask_from_bands`), so memory stays as bounded. The mask is the
    resized logits' arg-max except where two classes tie to float rounding. A coco-mini photo from 256 px logits
    of the trained light model: 0.75 against 2.84 ms for resizing every plane (benchmarks/mask_speed.py).
    """
    if logits.ndim != 3:
        raise ValueError(f"expected CxHxW logits, got shape {logits.shape}")
    logits = logits.astype(np.float32, copy=False)
    c, h, w = logits.shape
    if c * h * w > MAX_BAND_VALUES:  # a tile canvas: its arg-max alone would pass the band's memory
        return _mask_from_bands(logits, size, max_band_pixels, keep)
    keep_h, keep_w = keep or size
    low = argmax_planes([logits[k] for k in range(c)])[0]
    below, right = np.vstack([low[1:], low[-1:]]), np.hstack([low[:, 1:], low[:, -1:]])
    agree = (low == below) & (low == right) & (low == np.hstack([below[:, 1:], below[:, -1:]]))
    if agree.size and 1.0 - np.count_nonzero(agree) / agree.size > MAX_UNSURE_SHARE:
        return _mask_from_bands(logits, size, max_band_pixels, keep)  # noisy logits: resizing is faster
    code = np.where(agree, low, np.uint8(UNSURE))  # the class of the taps from (i, j) to (i+1, j+1), or UNSURE
    ylo, yhi, yf = (taps[:keep_h] for taps in _linear_taps(size[0], h))
    xlo, xhi, xf = (taps[:keep_w] for taps in _linear_taps(size[1], w))
    mask = np.take(np.take(code, ylo, axis=0), xlo, axis=1)
    step = max(keep_w, max_band_pixels or MAX_BAND_VALUES // max(c, 1))  # at least a row, as the bands
    flat = logits.reshape(c, h * w)
    for start in range(0, mask.size, step):  # pixels in chunks of `step`: each is also a bound on the unsure ones
        at = start + np.flatnonzero(mask.reshape(-1)[start:start + step] == UNSURE)
        if not len(at):
            continue
        ys, xs = np.divmod(at, keep_w)
        top, bottom, fy, x0, x1, fx = ylo[ys] * w, yhi[ys] * w, yf[ys], xlo[xs], xhi[xs], xf[xs]
        top_left, top_right = flat.take(top + x0, axis=1), flat.take(top + x1, axis=1)
        left = top_left + (flat.take(bottom + x0, axis=1) - top_left) * fy  # resize_logits: rows, then columns
        right = top_right + (flat.take(bottom + x1, axis=1) - top_right) * fy
        mask.flat[at] = (left + (right - left) * fx).argmax(0)
    return mask


UNSURE = 255  # logits_to_mask's mark of a pixel whose taps disagree (a class 255 so marked is interpolated: itself)
# Above this share of source cells whose taps disagree, logits_to_mask resizes every plane instead: interpolating
# one pixel alone costs about 20 times one pixel of OpenCV's resize (176 against 7.5 to 15 ns, 5 classes).
MAX_UNSURE_SHARE = 0.04


def _mask_from_bands(logits: np.ndarray, size: tuple[int, int], max_band_pixels: int | None = None,
                     keep: tuple[int, int] | None = None) -> np.ndarray:
    """logits_to_mask by resizing every class plane, band by band, then the arg-max."""
    keep_h, keep_w = keep or size
    mask = np.empty((keep_h, keep_w), dtype=np.uint8)
    for rows, planes in logit_bands(logits, size, keep, max_band_pixels):
        mask[rows] = argmax_planes(planes)[0]
    return mask


def logits_to_mask_and_confidence(logits: np.ndarray, size: tuple[int, int], max_band_pixels: int | None = None,
                                  keep: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The class mask and each pixel's confidence: the softmax probability of its winning class (float32).

    The mask is `logits_to_mask`'s, not the bands' own arg-max, so a photo's mask is the same bytes whichever
    outputs are saved; the softmax is taken over the resized logits.
    """
    keep_h, keep_w = keep or size
    confidence = np.empty((keep_h, keep_w), dtype=np.float32)
    for rows, planes in logit_bands(logits, size, keep, max_band_pixels):
        best = argmax_planes(planes)[1]
        np.divide(np.float32(1.0), _exp_sum(planes, best), out=confidence[rows])  # NumPy: see above
    return logits_to_mask(logits, size, max_band_pixels, keep), confidence


def logits_to_probabilities(logits: np.ndarray, size: tuple[int, int], max_band_pixels: int | None = None,
                            keep: tuple[int, int] | None = None) -> np.ndarray:
    """CxHxW logits -> CxHxW float32 class probabilities (softmax over the resized logits) at `size`."""
    keep_h, keep_w = keep or size
    out = np.empty((logits.shape[0], keep_h, keep_w), dtype=np.float32)
    for rows, planes in logit_bands(logits, size, keep, max_band_pixels):
        best = argmax_planes(planes)[1]
        total = _exp_sum(planes, best)
        for k, plane in enumerate(planes):
            band = out[k, rows]
            cv2.subtract(plane, best, dst=band)
            cv2.exp(band, dst=band)
            cv2.divide(band, total, dst=band)
    return out


def _palette_lut(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """256x1x3 uint8 lookup table for cv2.LUT: class -> colour; ignore (255) and unknown indices white."""
    lut = np.full((256, 1, 3), 255, dtype=np.uint8)
    lut[: len(palette), 0] = np.asarray(palette, dtype=np.uint8)
    return lut


def _colour_of(mask: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """One single-channel lookup per colour channel, then merged: 0.25 against 0.49 ms for a three-channel lookup
    of the mask merged three times (640x424, one thread)."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return cv2.merge([cv2.LUT(mask, np.ascontiguousarray(lut[:, :, k])) for k in range(3)])


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class mask -> HxWx3 uint8 RGB colour mask; ignore (255) and unknown indices are white."""
    return _colour_of(mask, _palette_lut(palette))


# Rows of the overlay blended at a time, so a 24-megapixel photo needs no full-size temporaries.
_OVERLAY_BAND_PIXELS = 1 << 21


def overlay(image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the photo; background (class 0) pixels keep the photo."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    lut = _palette_lut(palette)
    out = np.empty_like(image)
    rows = max(1, _OVERLAY_BAND_PIXELS // max(image.shape[1], 1))
    for r0 in range(0, image.shape[0], rows):
        band = slice(r0, r0 + rows)
        cv2.addWeighted(image[band], 1.0 - alpha, _colour_of(mask[band], lut), alpha, 0.0, dst=out[band])
        cv2.copyTo(image[band], np.ascontiguousarray(mask[band] == 0).view(np.uint8), out[band])
    return out
