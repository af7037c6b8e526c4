"""`segdeploy batch` over object storage: SOURCE and --out as s3:// URLs against moto's S3 server on 127.0.0.1
(started here), with coco-mini photos. Same outputs, summary, resume and failure policy as local folders."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from colour_models import batch_command, build_colour_model, subprocess_env

pytest.importorskip("s3fs", reason="the cloud extra (s3fs) is not installed")
pytest.importorskip("moto", reason="moto[server] (dev extra) is not installed")

from s3_server import ADMIN_SECRET, S3Server, s3_env, s3_server  # noqa: E402

from segdeploy.cli import EXIT_FAILURE, EXIT_INPUT, EXIT_SOME_INPUTS_FAILED  # noqa: E402

BUCKET = "photos"
N_PHOTOS = 6
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> S3Server:
    with s3_server() as s3:
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture(scope="module")
def photos(server: S3Server, coco_mini: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same coco-mini photos in a local folder and under s3://photos/in/ (one in a sub-prefix), and an object
    that is not an image."""
    root = tmp_path_factory.mktemp("s3")
    local = root / "in"
    client = server.client()
    keys = []
    for i, src in enumerate(sorted((coco_mini / "test" / "data").glob("*.jpg"))[:N_PHOTOS]):
        key = f"{'sub/' if i % 2 else ''}{src.name}"
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, local / key)
        client.put_object(Bucket=BUCKET, Key=f"in/{key}", Body=src.read_bytes())
        keys.append(key)
    client.put_object(Bucket=BUCKET, Key="in/sub/broken.jpg", Body=b"not a jpeg")
    (local / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    return {"root": root, "local": local, "keys": keys, "model": build_colour_model(root / "colour.onnx")}


def _objects(server: S3Server, prefix: str) -> dict[str, bytes]:
    client = server.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _batch(*args: object, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(batch_command(*args, "--no-progress"), env={**subprocess_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_local_photos_to_s3_give_the_bytes_of_a_local_run_and_resume(server: S3Server, photos: dict) -> None:
    model, local = photos["model"], photos["local"]
    to_disk = _batch(local, "--out", photos["root"] / "local-out", "--model", model)
    to_s3 = _batch(local, "--out", f"s3://{BUCKET}/preds/", "--model", model)
    assert to_s3.returncode == to_disk.returncode == EXIT_SOME_INPUTS_FAILED, to_s3.stderr
    assert "sub/broken.jpg" in to_s3.stderr and "not an image" in to_s3.stderr  # a named failure
    disk, s3 = _files(photos["root"] / "local-out"), _objects(server, "preds/")
    assert set(s3) == set(disk) and len(s3) == 2 * N_PHOTOS + 3  # mask, overlay; 2 legends; summary
    for rel in sorted(set(disk) - {"summary.json"}):
        assert s3[rel] == disk[rel], rel  # byte for byte
    summary = json.loads(s3["summary.json"])
    assert summary["out_dir"] == f"s3://{BUCKET}/preds"
    assert sorted(r["input"] for r in summary["images"]) == sorted(photos["keys"])
    assert [f["input"] for f in summary["failures"]] == ["sub/broken.jpg"]
    # A rerun skips the objects already written; a deleted mask is redone, alone.
    server.client().delete_object(Bucket=BUCKET, Key=f"preds/{photos['keys'][0]}.mask.png")
    rerun = _batch(local, "--out", f"s3://{BUCKET}/preds/", "--model", model)
    assert f"{N_PHOTOS - 1} of {N_PHOTOS + 1} inputs already have complete outputs" in rerun.stderr
    again = json.loads(_objects(server, "preds/")["summary.json"])
    assert again["totals"]["processed"] == 1 and again["totals"]["resumed"] == N_PHOTOS - 1
    assert _objects(server, "preds/")[f"{photos['keys'][0]}.mask.png"] == disk[f"{photos['keys'][0]}.mask.png"]


def test_s3_photos_to_a_local_folder_and_back_to_s3(server: S3Server, photos: dict) -> None:
    model = photos["model"]
    out = photos["root"] / "from-s3"
    res = _batch(f"s3://{BUCKET}/in/", "--out", out, "--model", model)
    assert res.returncode == EXIT_SOME_INPUTS_FAILED, res.stderr
    assert "skipped s3://photos/in/sub/broken.jpg: not an image Pillow can identify" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(r["input"] for r in summary["images"]) == sorted(photos["keys"])
    assert summary["sources"] == [f"s3://{BUCKET}/in/"]
    local = _files(photos["root"] / "local-out") if (photos["root"] / "local-out").exists() else None
    from colour_models import read_png

    for key in photos["keys"]:  # the pixels of the masks of the same photos read from disk
        mask = read_png(out / f"{key}.mask.png")
        assert mask.shape == (480, 640) or mask.shape[0] > 100, key
        if local is not None:
            assert (out / f"{key}.overlay.jpg").read_bytes() == local[f"{key}.overlay.jpg"], key
    rerun = _batch(f"s3://{BUCKET}/in/", "--out", out, "--model", model)
    assert f"{N_PHOTOS} of {N_PHOTOS + 1} inputs already have complete outputs" in rerun.stderr
    both = _batch(f"s3://{BUCKET}/in/", "--out", f"s3://{BUCKET}/s3-to-s3/", "--model", model)
    assert both.returncode == EXIT_SOME_INPUTS_FAILED, both.stderr
    written = _objects(server, "s3-to-s3/")
    for rel, data in _files(out).items():
        if rel != "summary.json":
            assert written[rel] == data, rel  # the same input objects give the same bytes wherever they go


def test_a_missing_object_is_a_one_line_error(server: S3Server, photos: dict) -> None:
    res = _batch(f"s3://{BUCKET}/in/nowhere.jpg", "--out", photos["root"] / "missing", "--model", photos["model"])
    assert res.returncode == EXIT_INPUT
    assert "s3://photos/in/nowhere.jpg: no images or videos" in res.stderr and "Traceback" not in res.stderr
    assert not (photos["root"] / "missing").exists()


def test_a_store_without_credentials_is_a_one_line_error(server: S3Server, photos: dict, tmp_path: Path) -> None:
    """botocore's NoCredentialsError is no OSError: the listing still ends in one line naming the URL, exit 2."""
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_ENDPOINT_URL=server.endpoint)
    res = subprocess.run(batch_command(f"s3://{BUCKET}/in", "--out", tmp_path / "out", "--model", photos["model"]),
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == EXIT_INPUT, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"Error: s3://{BUCKET}/in: cannot list it (") and "credentials" in line, line
    assert not (tmp_path / "out").exists()


def test_an_object_gone_before_it_is_read_is_a_named_failure(server: S3Server, photos: dict) -> None:
    from segdeploy.infer.batch.decode import decode
    from segdeploy.infer.batch.plan import plan_jobs
    from segdeploy.infer.pipeline import Failure
    from segdeploy.infer.predictor import Predictor

    server.client().put_object(Bucket=BUCKET, Key="gone/a.jpg", Body=(photos["local"] / photos["keys"][0]).read_bytes())
    jobs, _ = plan_jobs([f"s3://{BUCKET}/gone/"], photos["root"] / "gone-out")
    server.client().delete_object(Bucket=BUCKET, Key="gone/a.jpg")
    result = decode(jobs[0], Predictor(photos["model"]))
    assert result == Failure("a.jpg", "file not found (removed during the run?)")


def test_a_denied_write_stops_cleanly_and_credentials_are_never_shown(server: S3Server, photos: dict) -> None:
    reader = server.user("reader", ["s3:Get*", "s3:List*"])
    server.enforce_auth(True)
    try:
        env = s3_env(server.endpoint, *reader)
        res = _batch(f"s3://{BUCKET}/in/", "--out", f"s3://{BUCKET}/denied/", "--model", photos["model"], env=env)
    finally:
        server.enforce_auth(False)
    assert res.returncode == EXIT_FAILURE, res.stdout + res.stderr
    assert "s3://photos/denied/legend.png: cannot write it (access denied)" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 2
    assert reader[1] not in res.stdout + res.stderr and ADMIN_SECRET not in res.stdout + res.stderr
    assert _objects(server, "denied/") == {}


def test_credentials_are_not_in_the_summary(server: S3Server, photos: dict) -> None:
    res = _batch(f"s3://{BUCKET}/in/", "--out", f"s3://{BUCKET}/creds/", "--model", photos["model"])
    text = _objects(server, "creds/")["summary.json"].decode()
    assert ADMIN_SECRET not in text and ADMIN_SECRET not in res.stdout + res.stderr


def test_a_killed_run_into_s3_resumes_to_the_bytes_of_an_uninterrupted_one(server: S3Server, photos: dict,
                                                                           tmp_path: Path) -> None:
    slow = build_colour_model(tmp_path / "slow.onnx", input_size=(128, 128), slow_layers=12, slow_width=64)
    args = [f"s3://{BUCKET}/in/", "--model", slow, "--batch-size", "1", "--workers", "1", "--threads", "1",
            "--no-progress"]
    proc = subprocess.Popen(batch_command(*args, "--out", f"s3://{BUCKET}/killed/"), env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while sum(k.endswith(".mask.png") for k in _objects(server, "killed/")) < 2:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = {k for k in _objects(server, "killed/") if k.endswith(".mask.png")}
    assert 2 <= len(done) < N_PHOTOS
    rerun = _batch(*args, "--out", f"s3://{BUCKET}/killed/")
    assert f"{len(done)} of {N_PHOTOS + 1} inputs already have complete outputs" in rerun.stderr
    whole = _batch(*args, "--out", f"s3://{BUCKET}/whole/")
    assert whole.returncode == EXIT_SOME_INPUTS_FAILED, whole.stderr
    killed, uninterrupted = _objects(server, "killed/"), _objects(server, "whole/")
    assert set(killed) == set(uninterrupted)
    for rel in sorted(set(killed) - {"summary.json"}):
        assert killed[rel] == uninterrupted[rel], rel


def test_three_shards_into_s3_merge_there_and_give_the_bytes_of_one_run(server: S3Server, photos: dict) -> None:
    model, source = photos["model"], f"s3://{BUCKET}/in/"
    _batch(source, "--out", f"s3://{BUCKET}/one/", "--model", model, "--save", "mask,overlay,rle")
    for k in range(3):
        res = _batch(source, "--out", f"s3://{BUCKET}/three/", "--model", model, "--save", "mask,overlay,rle",
                     "--shard", f"{k}/3")
        assert res.returncode in (0, EXIT_SOME_INPUTS_FAILED), res.stderr
    merged = subprocess.run([*batch_command()[:-1], "merge-summary", f"s3://{BUCKET}/three/"], env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == EXIT_SOME_INPUTS_FAILED, merged.stdout + merged.stderr  # broken.jpg, named
    one, three = _objects(server, "one/"), _objects(server, "three/")
    shard_files = {f"{name}.shard-{k}-of-3.json" for name in ("summary", "predictions") for k in range(3)}
    assert set(three) == set(one) | shard_files
    for rel in sorted(set(one) - {"summary.json"}):  # predictions.json merged from the shards' files too
        assert three[rel] == one[rel], rel
    summary = json.loads(three["summary.json"])
    assert sorted(r["input"] for r in summary["images"]) == sorted(photos["keys"])
    assert summary["out_dir"] == f"s3://{BUCKET}/three"


def test_an_out_prefix_inside_the_source_prefix_is_not_read_as_input(server: S3Server, photos: dict) -> None:
    source, model = f"s3://{BUCKET}/in/", photos["model"]
    first = _batch(source, "--out", f"s3://{BUCKET}/in/preds/", "--model", model)
    again = _batch(source, "--out", f"s3://{BUCKET}/in/preds/", "--model", model)
    assert first.returncode == again.returncode == EXIT_SOME_INPUTS_FAILED, first.stderr + again.stderr
    assert f"{N_PHOTOS} of {N_PHOTOS + 1} inputs already have complete outputs" in again.stderr
    same = _batch(source, "--out", source, "--model", model)
    assert same.returncode == EXIT_INPUT and "is the input prefix" in same.stderr
    for key in list(_objects(server, "in/preds/")):
        server.client().delete_object(Bucket=BUCKET, Key=f"in/preds/{key}")


@contextlib.contextmanager
def _requests() -> Iterator[list[str]]:
    """The request lines ("GET /photos?list-type=2&prefix=... HTTP/1.1") the server logs meanwhile."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.extend(re.findall(r'"((?:GET|HEAD|PUT|POST|DELETE) \S+)', record.getMessage()))

    log = logging.getLogger("werkzeug")
    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def test_existence_checks_cost_no_request_per_image(server: S3Server, photos: dict, tmp_path: Path) -> None:
    """A run lists its --out once and answers every 'is this output there?' from that listing (S3 answers a missing
    key with a HEAD and then a LIST, two requests per check and several checks per image otherwise)."""
    listings = {}
    for count in (1, N_PHOTOS):
        folder = tmp_path / f"in-{count}"
        for key in photos["keys"][:count]:
            (folder / Path(key).name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photos["local"] / key, folder / Path(key).name)
        for attempt in ("first", "resumed"):
            with _requests() as lines:
                res = _batch(folder, "--out", f"s3://{BUCKET}/checks-{count}/", "--model", photos["model"])
            assert res.returncode == 0, res.stderr
            listings[count, attempt] = [line for line in lines if "list-type=2" in line or line.startswith("HEAD")]
            objects = [line for line in lines if line.startswith(("PUT", "GET")) and "list-type" not in line]
            assert objects, lines  # the log is read
    assert len(listings[1, "first"]) == len(listings[N_PHOTOS, "first"]), listings
    assert len(listings[1, "resumed"]) == len(listings[N_PHOTOS, "resumed"]), listings


def test_overwrite_replaces_another_runs_objects(server: S3Server, photos: dict) -> None:
    """--out in a store holding another run's outputs (another --save) is refused, and with --overwrite replaced:
    the prefix then holds what a fresh run into an empty prefix writes, byte for byte."""
    model, source = photos["model"], f"s3://{BUCKET}/in/"
    first = _batch(source, "--out", f"s3://{BUCKET}/ow/", "--model", model, "--save", "mask,confidence")
    assert first.returncode == EXIT_SOME_INPUTS_FAILED, first.stderr
    assert any(k.endswith(".confidence.png") for k in _objects(server, "ow/"))
    refused = _batch(source, "--out", f"s3://{BUCKET}/ow/", "--model", model, "--save", "mask,overlay")
    assert refused.returncode == EXIT_INPUT and "--overwrite" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    again = _batch(source, "--out", f"s3://{BUCKET}/ow/", "--model", model, "--save", "mask,overlay", "--overwrite")
    assert again.returncode == EXIT_SOME_INPUTS_FAILED, again.stderr
    fresh = _batch(source, "--out", f"s3://{BUCKET}/ow-fresh/", "--model", model, "--save", "mask,overlay")
    assert fresh.returncode == EXIT_SOME_INPUTS_FAILED, fresh.stderr
    replaced, expected = _objects(server, "ow/"), _objects(server, "ow-fresh/")
    assert replaced.keys() == expected.keys()  # no confidence map of the first run is left
    for rel in sorted(set(expected) - {"summary.json"}):
        assert replaced[rel] == expected[rel], rel
