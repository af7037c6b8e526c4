"""segdeploy: export trained models to ONNX, run them over folders, measure them.

Three wings: `segdeploy.infer` (torch-free: runtimes, the batch pipeline, evaluation, info, shards),
`segdeploy.export` (checkpoint -> verified ONNX, INT8/FP16 variants) and `segdeploy.bench`
(`segdeploy bench`). The inference wing never imports torch.
"""

__version__ = "0.1.0"
