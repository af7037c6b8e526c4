"""The export wing of segdeploy: checkpoint -> self-describing ONNX, verified against PyTorch, plus INT8/FP16.

    config.py    ExportConfig: the settings, their defaults and ranges (the CLI reads them from here)
    trace.py     the dynamo trace and the graph fixes after it
    artifact.py  file names, metadata (spec + provenance), staging, reports
    verify.py    parity of two predictors on real images (logits, arg-max agreement, mIoU)
    routing.py   SegNet parity with PyTorch following onnxruntime's max-pool choices
    variants.py  INT8 (static QDQ) and FP16 variants of an FP32 file, compared with it
    exporter.py  export_checkpoint(s): the one orchestrator
"""
