"""Helpers for the tests of several destinations: configs, what the simulator served, age keys."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from archiver.simulator import Simulator, SimulatorServer
from tests.archive_backends import ArchiveBackend
from tests.conftest import Workspace, run_cli


def near(workspace: Workspace, **extra: Any) -> dict[str, Any]:
    """A local destination named "near" (in `near_folder`: the local `archive_backend` has the
    workspace's archive folder)."""
    return {"name": "near", "type": "local", "path": str(near_folder(workspace)), **extra}


def near_folder(workspace: Workspace) -> Path:
    """Where "near" keeps its copies."""
    return workspace.root / "near"


def local(workspace: Workspace, name: str, **extra: Any) -> dict[str, Any]:
    """Another local destination, in a folder of its own beside the workspace's archive."""
    return {"name": name, "type": "local", "path": str(workspace.root / name), **extra}


def far(backend: ArchiveBackend, **extra: Any) -> dict[str, Any]:
    """The parametrized backend as a destination named "far"."""
    return {"name": "far", **backend.storage, **extra}


def config(
    workspace: Workspace, server: SimulatorServer, destinations: list[dict[str, Any]],
    **sections: Any,
) -> str:
    """A config with stack-a and these `[[storage]]` destinations."""
    return str(workspace.write_config(
        server.base_url, [{"uid": "stack-a"}], storage=destinations, **sections
    ))


def upstream_bytes(sim: Simulator, backup_id: int) -> bytes:
    """The backup as Cloud 66 has it: its parts joined."""
    return b"".join(path.read_bytes() for path in sim.backup_content_path(backup_id))


def files_under(root: Path, suffix: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `root` ending in `suffix`."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob(f"*{suffix}"))
    }


async def backend_files(backend: ArchiveBackend, suffix: str) -> dict[str, bytes]:
    """Key -> bytes of every object of `backend` ending in `suffix`."""
    return {key: await backend.read(key) for key in await backend.keys() if key.endswith(suffix)}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def status_json(config_path: str) -> dict[str, Any]:
    """`status --json`, parsed."""
    result = await run_cli("--config", config_path, "status", "--json")
    assert result.code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def cloud66_work(sim: Simulator) -> dict[str, int]:
    """What the simulator served that a fill-in must never cause: per-backup API calls and blobs."""
    by_path = sim.stats.api_requests_by_path
    return {
        "list_files": by_path["list_files"],
        "get_file": by_path["get_file"],
        "public_urls": sim.stats.public_urls_issued,
        "blob_requests": sim.stats.blob_requests,
        "bytes_served": sim.stats.bytes_served,
    }


NO_CLOUD66_WORK = {
    "list_files": 0, "get_file": 0, "public_urls": 0, "blob_requests": 0, "bytes_served": 0,
}


def age_key(folder: Path, name: str = "age.key") -> tuple[Path, str]:
    """A fresh age identity made by age-keygen, and its public key."""
    key = folder / name
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return key, public


def age_decrypt(key: Path, sealed: bytes) -> bytes:
    """What the age CLI makes of an age file."""
    return subprocess.run(
        ["age", "-d", "-i", str(key)], input=sealed, capture_output=True, check=True
    ).stdout
