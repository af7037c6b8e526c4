"""The inference wing of segdeploy (torch-free): runtimes, the Predictor (the Python API: `from segdeploy
import Predictor`), tiled inference for large images, the overlapped pipeline and the `segdeploy batch`
run built on them, its outputs (masks, overlays, legends, confidence, COCO RLE), summaries,
ground-truth scoring, evaluation of .onnx models, model info, and sharded runs (partition + merge).

Nothing here imports torch (a test proves it): these modules run on machines that have only the
deploy install. They build on segtrain's torch-free modules (contract, coco, images, metrics).
"""
