"""`segdeploy batch --engine ray` and segdeploy.infer.ray_batch.predict_dataset on a local Ray instance started here
(ray.init(num_cpus=2), no dashboard): the same files, byte for byte, as a local run; a failing photo is a named
failure; a Ray Data Dataset in, one row per photo out."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from colour_models import batch_command, build_colour_model, half_image, read_png, save, subprocess_env

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytest.importorskip("ray.data", reason="the ray extra is not installed")

from s3_server import S3Server, s3_server  # noqa: E402

from segdeploy.infer.batch.config import BatchConfig  # noqa: E402
from segdeploy.infer.batch.outputs import decode_mask  # noqa: E402
from segdeploy.infer.batch.run import run_batch  # noqa: E402
from segdeploy.infer.ray_batch import predict_dataset  # noqa: E402

pytestmark = pytest.mark.slow
SAVE = ("mask", "overlay", "rle")


@pytest.fixture(scope="module")
def s3() -> S3Server | None:
    """moto's S3 server on 127.0.0.1, started before Ray so that its workers inherit the environment that points
    to it (as a cluster's workers get their credentials from theirs); None without moto and s3fs."""
    try:
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError:
        yield None
        return
    with s3_server() as server:
        server.client().create_bucket(Bucket="photos")
        yield server


@pytest.fixture(scope="module")
def local_ray(s3: S3Server | None) -> None:
    """Ray on this machine, bounded in time: after 10 minutes the process dumps its threads and exits. Ray's
    out-of-memory killer is off: it counts the memory of every process of the (shared) machine."""
    faulthandler.dump_traceback_later(600, exit=True)
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.pop("RAY_memory_monitor_refresh_ms", None)
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """9 photos of several sizes in two folders (an odd count for 2 actors and batches of 4) and a broken one."""
    root = tmp_path_factory.mktemp("ray")
    images = {}
    for i in range(9):
        rel = f"{'sub/' if i % 3 == 0 else ''}im{i}.png"
        images[rel] = save(half_image(30 + 2 * i, 40 + 2 * (i % 4), i % 2), root / "in" / rel)
    (root / "in" / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    model = build_colour_model(root / "colour.onnx")
    local = run_batch(BatchConfig(sources=root / "in", out_dir=root / "local", model=model, save=SAVE,
                                  progress=False), log=lambda m: None)
    return {"root": root, "images": images, "model": model, "local": local.summary.to_dict()}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_ray_run_writes_the_bytes_of_a_local_run(local_ray: None, photos: dict) -> None:
    root = photos["root"]
    result = run_batch(BatchConfig(sources=root / "in", out_dir=root / "on-ray", model=photos["model"], save=SAVE,
                                   progress=False, engine="ray", actors=2, batch_size=4), log=lambda m: None)
    local, on_ray = _files(root / "local"), _files(root / "on-ray")
    assert set(local) == set(on_ray)
    for rel in sorted(set(local) - {"summary.json"}):  # predictions.json too: assembled from the actors' rows
        assert on_ray[rel] == local[rel], rel
    summary = result.summary.to_dict()
    assert summary["failures"] == [{"input": "sub/broken.jpg", "reason": "not an image Pillow can identify"}]
    strip = [{**r, "seconds": None} for r in summary["images"]]
    assert strip == [{**r, "seconds": None} for r in photos["local"]["images"]]
    assert all(r["seconds"]["infer"] >= 0 for r in summary["images"])  # timed (a tiny model's may round to 0)
    assert summary["totals"]["processed"] == 9 and summary["totals"]["failed"] == 1
    assert {k: summary["settings"][k] for k in ("engine", "actors")} == {"engine": "ray", "actors": 2}
    assert photos["local"]["settings"]["engine"] == "local"  # the summary says who ran the images
    # A rerun resumes every finished image, on Ray as locally.
    again = run_batch(BatchConfig(sources=root / "in", out_dir=root / "on-ray", model=photos["model"], save=SAVE,
                                  progress=False, engine="ray", actors=2), log=lambda m: None)
    assert again.summary.totals.resumed == 9 and again.summary.totals.processed == 0
    assert _files(root / "on-ray").keys() == on_ray.keys()


def test_predict_dataset_takes_and_returns_a_ray_dataset(local_ray: None, photos: dict, tmp_path: Path) -> None:
    root = photos["root"]
    paths = sorted(str(p) for p in (root / "in").rglob("*.*"))
    dataset = ray.data.read_binary_files(paths, include_paths=True)
    rows = {r["input"]: r for r in predict_dataset(dataset, photos["model"], out=tmp_path / "out",
                                                   root=str(root / "in"), actors=1).take_all()}
    assert sorted(rows) == sorted([*photos["images"], "sub/broken.jpg"])
    assert rows["sub/broken.jpg"]["error"] == "not an image Pillow can identify"
    for rel in photos["images"]:
        row = rows[rel]
        assert row["error"] == "" and json.loads(row["record"])["input"] == rel
        np.testing.assert_array_equal(decode_mask(row["mask"]), read_png(root / "local" / f"{rel}.mask.png"),
                                      err_msg=rel)
        assert (tmp_path / "out" / f"{rel}.mask.png").read_bytes() == row["mask"], rel  # written to `out` too


def test_ray_actors_read_and_write_s3_as_a_local_run_does(s3: S3Server | None, local_ray: None, photos: dict) -> None:
    if s3 is None:
        pytest.skip("moto[server] and s3fs (the dev and cloud extras) are not installed")
    client = s3.client()
    for path in sorted((photos["root"] / "in").rglob("*.*")):
        client.put_object(Bucket="photos", Key=f"in/{path.relative_to(photos['root'] / 'in').as_posix()}",
                          Body=path.read_bytes())
    outputs = {}
    for engine in ("local", "ray"):
        result = run_batch(BatchConfig(sources="s3://photos/in/", out_dir=f"s3://photos/{engine}/",
                                       model=photos["model"], save=SAVE, progress=False, engine=engine),
                           log=lambda m: None)
        assert result.summary.totals.processed == 9 and [f.input for f in result.failures] == ["sub/broken.jpg"]
        listed = client.list_objects_v2(Bucket="photos", Prefix=f"{engine}/")["Contents"]
        outputs[engine] = {o["Key"].split("/", 1)[1]: client.get_object(Bucket="photos", Key=o["Key"])["Body"].read()
                           for o in listed}
    assert outputs["ray"].keys() == outputs["local"].keys() and len(outputs["ray"]) == 2 * 9 + 4
    for rel in sorted(set(outputs["local"]) - {"summary.json"}):
        assert outputs["ray"][rel] == outputs["local"][rel], rel


def _actor_pids() -> list[int]:
    """The processes whose title Ray set to a PredictActor's ("ray::MapWorker(MapBatches(PredictActor))")."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"PredictActor" in title and title.startswith(b"ray::"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's actor processes in /proc")
def test_an_actor_killed_mid_run_is_replaced_and_every_photo_comes_out_once(local_ray: None, tmp_path: Path) -> None:
    """SIGKILL one of two actors once the first outputs are written: Ray restarts it and retries its batch; the run
    still gives every photo once, the files of a local run byte for byte, and no temporary file of the killed
    writer."""
    images = {f"im{i:02d}.png": save(half_image(48 + i, 64 + (i % 5), i % 2), tmp_path / "in" / f"im{i:02d}.png")
              for i in range(48)}
    # real work per photo (about 10-50 ms), so that the run is still going when an actor is killed
    model = build_colour_model(tmp_path / "slow.onnx", input_size=(128, 128), slow_layers=4, slow_width=32)
    local = run_batch(BatchConfig(sources=tmp_path / "in", out_dir=tmp_path / "local", model=model, save=SAVE,
                                  progress=False, threads=1), log=lambda m: None)
    out = tmp_path / "on-ray"
    killed: list[tuple[int, int]] = []  # (pid, masks written when it was killed)

    def kill_one_actor_mid_run() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            written = len(list(out.glob("*.mask.png"))) if out.is_dir() else 0
            pids = _actor_pids()
            if written and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], written))
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_actor_mid_run, daemon=True)
    killer.start()
    result = run_batch(BatchConfig(sources=tmp_path / "in", out_dir=out, model=model, save=SAVE, progress=False,
                                   engine="ray", actors=2, batch_size=2), log=lambda m: None)
    killer.join(timeout=10)
    assert killed and killed[0][1] < len(images), f"no actor was killed before the run ended: {killed}"
    summary = result.summary.to_dict()
    assert summary["failures"] == [] and summary["totals"]["processed"] == len(images)
    assert sorted(r["input"] for r in summary["images"]) == sorted(images)  # each photo once
    local_files, ray_files = _files(tmp_path / "local"), _files(out)
    assert ray_files.keys() == local_files.keys()  # no temporary file left by the killed writer
    for rel in sorted(set(local_files) - {"summary.json"}):
        assert ray_files[rel] == local_files[rel], rel
    assert local.summary.totals.processed == len(images)


def test_an_address_where_no_cluster_answers_is_one_line_before_anything_is_written(photos: dict,
                                                                                     tmp_path: Path) -> None:
    """ray.init would retry a dead address for minutes, warning every few seconds; the run refuses it at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    started = time.monotonic()
    res = subprocess.run(batch_command(photos["root"] / "in", "--out", tmp_path / "out", "--model", photos["model"],
                                       "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"),
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"Error: --ray-address 127.0.0.1:{port}: cannot connect to a Ray cluster "
                                  f"(nothing answers at 127.0.0.1:{port}: Connection refused)")
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags", [["--actors", "2"], ["--ray-address", "auto"]])
def test_ray_flags_without_the_ray_engine_are_refused(photos: dict, tmp_path: Path, flags: list[str]) -> None:
    res = subprocess.run(batch_command(photos["root"] / "in", "--out", tmp_path / "out", "--model", photos["model"],
                                       *flags), env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == (f"Error: {flags[0]} applies to --engine ray (this run's "
                                                          "engine is local); add --engine ray, or leave it out")
    assert not (tmp_path / "out").exists()
