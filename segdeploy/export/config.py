"""Settings of `segdeploy export`: every default lives here, and the command line reads it from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segdeploy.export.trace import DEFAULT_OPSET
from segdeploy.export.verify import Thresholds

DEFAULT_CALIBRATION_IMAGES = 32
# The INT8 gate: the INT8 file is written only when, against FP32 on the validation images, arg-max
# agreement is at least 99% and mIoU drops by at most 1 point (FP32's max |logit diff| is not a bar for INT8).
DEFAULT_INT8_GATE = Thresholds(max_abs_diff=None, min_agreement=0.99, max_miou_drop=0.01)


@dataclass
class ExportOptions:
    out_dir: Path = Path("exported")
    opset: int = DEFAULT_OPSET
    verify: bool = True
    data: Path | None = None  # default: the dataset the checkpoint was trained on
    split: str = "validation"  # whose images verify the export and score the variants
    verify_images: int = 8
    verify_batch_size: int = 2
    thresholds: Thresholds = field(default_factory=Thresholds)
    int8: bool = False
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    int8_gate: Thresholds = DEFAULT_INT8_GATE
    int8_images: int = 100  # validation images the INT8 model is compared with FP32 on (the gate's evidence)
    fp16: bool = False
    overwrite: bool = False  # replace files exported from another checkpoint (and redo up-to-date ones)
