"""A real S3-compatible server for the object-storage tests: the Versity S3 Gateway.

``versitygw`` (pinned in scripts/fetch_s3_server.sh, built with ``go install`` and cached under
``~/.cache/bigearthnet``; built here on first use if ``make setup`` has not) serves the S3 API
over a temporary folder (its ``posix`` backend) on 127.0.0.1 and a free port, for the whole
session. Tests reach it the way users reach any S3-compatible store: through the standard AWS
environment variables (the ``s3_env`` fixture sets them).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "bigearthnet-test"
SECRET_KEY = "bigearthnet-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """The environment variables that point a client at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               endpoint_override=self.endpoint.split("://")[1], scheme="http",
                               region="us-east-1", allow_bucket_creation=True,
                               allow_bucket_deletion=True)


def _server_binary() -> str:
    out = subprocess.run([str(ROOT / "scripts" / "fetch_s3_server.sh"), "--print-path"],
                         check=True, capture_output=True, text=True, timeout=900)
    return out.stdout.strip().splitlines()[-1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    """versitygw on 127.0.0.1 with one bucket; stopped at the end of the session."""
    binary = _server_binary()
    data = tmp_path_factory.mktemp("s3-data")
    port = _free_port()
    log = (data.parent / "versitygw.log").open("wb")
    env = {**os.environ, "ROOT_ACCESS_KEY": ACCESS_KEY, "ROOT_SECRET_KEY": SECRET_KEY}
    proc = subprocess.Popen([binary, "--port", f"127.0.0.1:{port}", "--quiet", "posix", str(data)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"versitygw exited with {proc.returncode}; see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("versitygw did not listen within 30 s") from None
                time.sleep(0.1)
        server = S3Server(f"http://127.0.0.1:{port}", ACCESS_KEY, SECRET_KEY,
                          f"bigearthnet-{uuid.uuid4().hex[:8]}", data)
        server.filesystem().create_dir(server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(s3_server, tmp_path):
    """The AWS variables of the test server in this process; datasets cached under tmp_path.

    The whole environment is restored afterwards (the code under test also sets GDAL's
    ``/vsis3/`` options in it).
    """
    saved = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update(s3_server.env())
    os.environ["BIGEARTHNET_CACHE"] = str(tmp_path / "cache")
    try:
        yield s3_server
    finally:
        os.environ.clear()
        os.environ.update(saved)


def upload_tree(server: S3Server, local: Path, prefix: str) -> str:
    """Upload a local folder under ``s3://bucket/prefix``; return that URI."""
    from pyarrow import fs

    fs.copy_files(str(local), f"{server.bucket}/{prefix}", destination_filesystem=server.filesystem())
    return f"s3://{server.bucket}/{prefix}"
