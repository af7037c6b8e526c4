"""Issue 21's targets: `segdeploy batch` on Ray Data and over object storage against the local run, on the same
coco-mini photos and model (DeepLabV3-ResNet18 at 128 px, random encoder weights: speed only), in one process,
rounds interleaved; images/s end to end (wall clock of the whole run, Ray's actor start included, as a user sees
it), the ratios of the medians and the median of each round's ratio; prints and writes JSON.

    python benchmarks/past_one_machine.py --data ../shared/data/coco-mini --photos 256 --rounds 5

local: `segdeploy batch PHOTOS --out DIR`; ray: the same with `--engine ray` on a local Ray instance
(ray.init(num_cpus=<cores>), actors by default); s3: photos read from and outputs written to moto's S3 server on
127.0.0.1, in a process of its own (`segdeploy batch s3://bench/photos/ --out s3://bench/out-N/`).

With `--s3rver PATH` (the `s3rver` command of `npm install s3rver@3`, a Node.js S3 server that keeps objects in
a folder) the same S3 run is also timed against s3rver on 127.0.0.1: a server that costs the shared cores less per
request than moto's Python, so the ratio says more of what the client pays.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(HERE))


def photos(data: Path, count: int, into: Path) -> list[Path]:
    """The first `count` coco-mini photos (validation, then test, then train), copied into `into`; past the 258 of
    coco-mini they come round again under new names (`2-<name>`, ...), for runs long enough that a fixed start
    cost weighs little."""
    chosen = [p for split in ("validation", "test", "train") for p in sorted((data / split / "data").glob("*.jpg"))]
    if not chosen:
        raise SystemExit(f"{data}: no photos")
    into.mkdir(parents=True, exist_ok=True)
    names = [(p, p.name if i < len(chosen) else f"{i // len(chosen) + 1}-{p.name}")
             for i, p in ((i, chosen[i % len(chosen)]) for i in range(count))]
    return [Path(shutil.copyfile(p, into / name)) for p, name in names]


@contextlib.contextmanager
def s3rver(command: Path) -> Iterator[dict[str, str]]:
    """s3rver on a free port of 127.0.0.1 (objects in a temporary folder), waited for (at most 60 s); yields the
    environment a client reads to reach it."""
    from s3_server import s3_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="s3rver-")
    proc = subprocess.Popen([str(command), "-d", data, "-a", "127.0.0.1", "-p", str(port), "-s"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{command} did not start on 127.0.0.1:{port}")
            time.sleep(0.2)
        yield s3_env(f"http://127.0.0.1:{port}", "S3RVER", "S3RVER")  # s3rver's own credentials
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


def use_store(env: dict[str, str]) -> None:
    """Point this process's S3 clients at the server of `env` (fsspec caches a filesystem per arguments, not per
    environment: drop them)."""
    import s3fs

    os.environ.update(env)
    s3fs.S3FileSystem.clear_instance_cache()


def upload(env: dict[str, str], files: list[Path]) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    for p in files:
        client.put_object(Bucket="bench", Key=f"photos/{p.name}", Body=p.read_bytes())


def timed(config_kwargs: dict) -> float:
    from segdeploy.infer.batch.config import BatchConfig
    from segdeploy.infer.batch.run import run_batch

    t0 = time.perf_counter()
    result = run_batch(BatchConfig(progress=False, **config_kwargs), log=lambda m: None)
    seconds = time.perf_counter() - t0
    assert result.summary.totals.failed == 0 and result.summary.totals.resumed == 0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "coco-mini")
    parser.add_argument("--photos", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "past_one_machine.json")
    parser.add_argument("--s3rver", type=Path, help="s3rver's command: also time the S3 run against it")
    args = parser.parse_args()

    import ray
    from s3_server import s3_env, s3_server
    from tiling_default import model as export_model

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="past-one-machine-"))
    onnx = export_model(HERE / "work", args.size)
    files = photos(args.data, args.photos, work / "photos")
    cores = os.cpu_count() or 1
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"  # a shared machine: others' memory is not ours to police
    with contextlib.ExitStack() as stack:
        stores = {"s3": s3_env(stack.enter_context(s3_server(own_process=True)).endpoint)}
        if args.s3rver:
            stores["s3rver"] = stack.enter_context(s3rver(args.s3rver))
        for env in stores.values():
            upload(env, files)
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        runs = {"local": lambda r: dict(sources=work / "photos", out_dir=work / f"local-{r}", model=onnx),
                "ray": lambda r: dict(sources=work / "photos", out_dir=work / f"ray-{r}", model=onnx, engine="ray"),
                **{store: lambda r: dict(sources="s3://bench/photos/", out_dir=f"s3://bench/out-{r}/", model=onnx)
                   for store in stores}}
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        timed(runs["local"]("warmup"))  # page cache, model file, imports
        for r in range(args.rounds):
            for name, kwargs in runs.items():
                if name in stores:
                    use_store(stores[name])
                seconds[name].append(timed(kwargs(r)))
                print(f"round {r} {name}: {seconds[name][-1]:.2f} s", flush=True)
        ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    rates = {name: args.photos / statistics.median(s) for name, s in seconds.items()}
    others = [name for name in seconds if name != "local"]
    per_round = {name: [loc / t for loc, t in zip(seconds["local"], seconds[name], strict=True)] for name in others}
    doc = {"command": " ".join(["python", *sys.argv]), "photos": args.photos, "model": f"deeplab_r18_{args.size}",
           "cores": cores, "rounds": args.rounds, "seconds": seconds,
           "images_per_second": {k: round(v, 2) for k, v in rates.items()},
           **{f"ratio_{name}_to_local": round(rates[name] / rates["local"], 3) for name in others},
           # the same ratios round by round (each against the local run of its own round), and their medians
           "round_ratios": {name: [round(r, 3) for r in ratios] for name, ratios in per_round.items()},
           "median_round_ratio": {name: round(statistics.median(ratios), 3) for name, ratios in per_round.items()},
           # the machine is shared: its 1-minute load average before and after says how quiet it was
           "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
