"""segdeploy: export trained models to ONNX, run them over folders, measure them.

Three wings: `segdeploy.infer` (torch-free: runtimes, the Predictor, the batch pipeline, evaluation,
info, shards), `segdeploy.export` (checkpoint -> verified ONNX, INT8/FP16 variants) and
`segdeploy.bench` (`segdeploy bench`). The inference wing never imports torch.

`from segdeploy import Predictor` is the Python API (segdeploy.infer.predictor; `Failure` is what
`Predictor.predict_iter` yields for an unreadable file, `ImageReadError` what `predict` and
`predict_batch` raise for one). They are imported on first use, so `import segdeploy` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Failure", "ImageReadError", "Predictor", "__version__"]

if TYPE_CHECKING:
    from segdeploy.infer.pipeline import Failure
    from segdeploy.infer.predictor import Predictor
    from segtrain.data.images import ImageReadError


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from segdeploy.infer.predictor import Predictor

        return Predictor
    if name == "Failure":
        from segdeploy.infer.pipeline import Failure

        return Failure
    if name == "ImageReadError":
        from segtrain.data.images import ImageReadError

        return ImageReadError
    raise AttributeError(f"module 'segdeploy' has no attribute {name!r}")
