"""The lock: uv.lock matches pyproject.toml, and the requirement files are its exports.

scripts/lock.sh writes all four; a pyproject change without it (a dependency moved
to an extra, a new pin) fails here rather than in the image build or a user's install.
uv runs offline: everything it reads is in the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

UV = Path(sys.executable).parent / "uv"
# The export options of scripts/lock.sh, per requirement file.
EXPORTS = {
    "requirements.lock": ["--extra", "all"],
    "requirements-test.lock": ["--extra", "test"],
    "requirements-build.lock": ["--only-group", "build"],
}


def _uv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args, "--offline"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def _export(*options: str) -> str:
    result = _uv("export", "--frozen", "--format", "requirements-txt", "--no-emit-project",
                 "--no-header", "--no-default-groups", *options)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _packages(requirements: str) -> set[str]:
    return {line.split("==")[0] for line in requirements.splitlines() if "==" in line}


def test_uv_lock_matches_pyproject() -> None:
    """`uv lock --check`: pyproject.toml has not moved since scripts/lock.sh last ran."""
    result = _uv("lock", "--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_requirement_file_is_the_export_of_uv_lock(name: str) -> None:
    """requirements*.lock are exactly what scripts/lock.sh exports from uv.lock."""
    assert (REPO_ROOT / name).read_text() == _export(*EXPORTS[name])


def test_apprise_is_locked_for_the_notify_extra_only() -> None:
    """The core install resolves without Apprise and its requests; [notify] and [all] bring it."""
    core = _packages(_export())
    notify = _packages(_export("--extra", "notify"))
    assert {"aiohttp", "structlog", "pyrage"} <= core
    assert not {"apprise", "requests", "requests-oauthlib", "markdown", "pyyaml"} & core
    assert {"apprise", "requests", "requests-oauthlib"} <= notify - core
    assert "apprise" in _packages((REPO_ROOT / "requirements.lock").read_text())
