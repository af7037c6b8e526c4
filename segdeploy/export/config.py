"""Settings of `segdeploy export` (defaults and ranges live here; the command line reads them from here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segdeploy.export.trace import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from segdeploy.export.verify import Thresholds
from segdeploy.infer.model_file import DEFAULT_MODEL_DIR
from segtrain.common.settings import Checked, at_least, between, non_empty, setting
from segtrain.evaluation import DEFAULT_SPLIT


@dataclass
class ExportConfig(Checked):
    """What to export and the bars it must pass: agreement in %, the INT8 mIoU drop in points, as on the
    command line (`thresholds` and `int8_gate` give them as fractions)."""

    checkpoints: list[Path] = setting(factory=list)  # none: every runs/*/best_model.pth
    out: Path = setting(DEFAULT_MODEL_DIR)
    opset: int = setting(DEFAULT_OPSET, rule=between(MIN_OPSET, MAX_OPSET))
    verify: bool = setting(True)
    data: Path | None = setting(None)  # None: the dataset the checkpoint was trained on
    split: str = setting(DEFAULT_SPLIT, rule=non_empty)  # whose images verify the export and score the variants
    verify_images: int = setting(8, rule=at_least(1))
    verify_batch_size: int = setting(2, rule=at_least(1))
    max_diff: float = setting(1e-4, rule=at_least(0))  # largest |logit difference| against PyTorch
    min_agreement: float = setting(99.99, rule=between(0, 100))  # smallest arg-max agreement, %
    int8: bool = setting(False)
    calibration_images: int = setting(32, rule=at_least(1))
    # The INT8 gate, against FP32 on `int8_images` validation images (FP32's max |logit diff| is no bar for INT8).
    int8_max_drop: float = setting(1.0, rule=at_least(0))  # mIoU points
    int8_min_agreement: float = setting(99.0, rule=between(0, 100))  # %
    int8_images: int = setting(100, rule=at_least(1))
    fp16: bool = setting(False)
    overwrite: bool = setting(False)  # replace files exported from another checkpoint (and redo up-to-date ones)

    @property
    def thresholds(self) -> Thresholds:
        """The FP32 export's bars against PyTorch."""
        return Thresholds(max_abs_diff=self.max_diff, min_agreement=self.min_agreement / 100)

    @property
    def int8_gate(self) -> Thresholds:
        return Thresholds(min_agreement=self.int8_min_agreement / 100, max_miou_drop=self.int8_max_drop / 100)
