"""An S3-compatible server on 127.0.0.1 for the object-storage tests: moto's server mode, started by the tests
(s3fs talks to it over HTTP, as to S3; moto's in-process mocks would not intercept s3fs's aiobotocore).

Clients find it the standard way, through the environment (AWS_ENDPOINT_URL and the AWS_* credentials), so the
code under test gets no test-only arguments.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

ADMIN_KEY, ADMIN_SECRET = "testing", "testing-secret-never-shown"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                            region_name="us-east-1")

    def enforce_auth(self, on: bool) -> None:
        """From now on check every request against IAM (moto's reset-auth), or stop checking."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf",
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def user(self, name: str, actions: list[str]) -> tuple[str, str]:
        """An IAM user allowed `actions` on every S3 resource; its (access key, secret)."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, aws_access_key_id=ADMIN_KEY,
                           aws_secret_access_key=ADMIN_SECRET, region_name="us-east-1")
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]


def s3_env(endpoint: str, key: str = ADMIN_KEY, secret: str = ADMIN_SECRET) -> dict[str, str]:
    """The environment a client of the server reads (the standard AWS variables)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


@contextlib.contextmanager
def s3_server(own_process: bool = False) -> Iterator[S3Server]:
    """moto's S3 server on a free port of 127.0.0.1, and this process's environment pointed at it; in a thread of
    this process, or (`own_process`, for timings: its Python work then does not share this process's GIL) in a
    process of its own."""
    if own_process:
        server = _MotoProcess()
    else:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in s3_env(endpoint)}
    os.environ.update(s3_env(endpoint))
    try:
        yield S3Server(endpoint)
    finally:
        # moto keeps its buckets in this process's memory, across servers: forget them for the next one
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_clients()
        server.stop()


class _MotoProcess:
    """`python -m moto.server` on a free port of 127.0.0.1, waited for (at most 60 s)."""

    def start(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("moto.server did not start within 60 s")

    def get_host_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _forget_clients() -> None:
    """fsspec caches a filesystem per set of arguments: drop them, so no later test talks to a stopped server."""
    with contextlib.suppress(ImportError):
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
