"""The bench wing of segdeploy: `segdeploy bench` measures, side by side in one process.

    config.py    BenchConfig: the settings, their defaults and ranges (the CLI reads them from here)
    models.py    what each MODEL argument is (checkpoint or .onnx) and its ONNX files
    backends.py  PyTorch eager and onnxruntime sessions behind one `run(batch)` interface
    rounds.py    first and warm-up runs, then interleaved timed rounds (with the SGEMM roofline)
    run.py       run_bench: every model, its INT8 accuracy and the end-to-end pipeline rate
    report.py    BenchReport: the --json document as one type (written and read), derived figures
    text.py      the report on screen
    plot.py      the latency/throughput plot
    timing.py    timing loops, latency statistics, peak RSS
    roofline.py  FLOP counts, the SGEMM rate, the machine description

It reports measurements only; this project's own acceptance bars live in benchmarks/.
"""
