"""The inference wing of segdeploy (torch-free): model files and runtimes, the Predictor (`from segdeploy import
Predictor`), tiling, the overlapped pipeline, evaluation of .onnx models, model info, and `batch/`, the
`segdeploy batch` and `merge-summary` commands built on them. Nothing here imports torch (tests/test_architecture.py).
"""
