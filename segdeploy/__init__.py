"""segdeploy: export trained models to ONNX and run them with onnxruntime.

The inference path (batch, evaluate on .onnx, info) never imports torch.
"""

__version__ = "0.1.0"
