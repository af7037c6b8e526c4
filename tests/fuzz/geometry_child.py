"""The geometry property, run in a child process by test_fuzz_geometry.py so a segfault in C code is caught.

Each example is written to the file named by argv[1] before it is decoded, so when the child dies
by a signal the parent can show the example that killed it.
"""

from __future__ import annotations

import sys

import numpy as np
from fuzzing import budget
from hypothesis import given
from hypothesis import strategies as st

from segtrain.data.rasterize import AnnotationError, TargetAnnotation, decode_segmentation, render_mask

NUMBERS = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**70), 2**70)
           | st.sampled_from([1e9, -1e9, 2**31, 2**32, -(2**31), 0.5, True, "3"]))
RLE_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=40)
SIZES = st.integers(1, 40)


@st.composite
def segmentations(draw: st.DrawFn, h: int, w: int) -> object:
    kind = draw(st.sampled_from(["polygon", "rle-list", "rle-text", "rle-valid", "any"]))
    if kind == "polygon":
        return draw(st.lists(st.lists(NUMBERS, max_size=14), max_size=3))
    size = draw(st.sampled_from([[h, w], [w, h], [h], [0, 0], None, "x", [h, w, 1]]))
    if kind == "rle-list":
        counts = draw(st.lists(st.integers(-5, h * w + 5) | st.integers(-(2**40), 2**40), max_size=8))
        return {"size": size, "counts": counts}
    if kind == "rle-text":
        return {"size": size, "counts": draw(RLE_TEXT)}
    if kind == "rle-valid":  # real counts, perhaps cut or padded
        from pycocotools import mask as mask_utils

        m = np.asfortranarray(draw(st.integers(0, 2**32)) % 3 == np.arange(h * w).reshape(h, w) % 3, np.uint8)
        text = mask_utils.encode(m)["counts"].decode("ascii")
        cut = draw(st.integers(0, len(text)))
        return {"size": [h, w], "counts": text[:cut] + draw(RLE_TEXT.filter(lambda t: len(t) < 3))}
    return draw(st.none() | st.booleans() | st.text(max_size=5) | st.dictionaries(st.text(max_size=3), NUMBERS))


def main(progress_file: str) -> None:
    @given(data=st.data())
    @budget(200)
    def property_(data: st.DataObject) -> None:
        h, w = data.draw(SIZES), data.draw(SIZES)
        segm = data.draw(segmentations(h, w))
        bbox = data.draw(st.none() | st.lists(NUMBERS, min_size=4, max_size=4).map(tuple))
        with open(progress_file, "w", encoding="utf-8") as f:
            f.write(repr((h, w, segm, bbox)))
        try:
            mask = decode_segmentation(segm, h, w)
            assert mask.shape == (h, w) and mask.dtype == bool
        except AnnotationError:
            pass
        try:
            label, problems = render_mask([TargetAnnotation(1, 3, segm, bbox)], h, w)
            assert label.shape == (h, w) and set(np.unique(label).tolist()) <= {0, 3, 255}
            assert all("\n" not in p for p in problems)
        except AnnotationError as e:
            assert "no usable bbox" in str(e)

    property_()


if __name__ == "__main__":
    main(sys.argv[1])
    print("ok")
