"""The Dockerfile, built and run: the demo inside the image as the non-root user.

No Docker engine here: buildah builds with chroot isolation on a Debian base made
with debootstrap (scripts/bootstrap.sh, `bootstrap_image_base`) and runs commands
in a working container, which shares the host's network: a pass inside reaches the
simulator and the notification receiver on loopback. Select with `-m docker`;
skipped only without buildah.
"""

from __future__ import annotations

import asyncio
import configparser
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archiver.simulator import Simulator, SimulatorServer
from tests.conftest import REPO_ROOT, TOKEN, render_toml
from tests.notify_receiver import Receiver

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        shutil.which("buildah") is None,
        reason="buildah missing (scripts/bootstrap.sh installs it: apt-get install buildah)",
    ),
]

BASE_IMAGE = "localhost/debian-python-slim:bookworm"  # scripts/bootstrap.sh
# One tag per checkout, so test runs of two checkouts on one machine do not retag each other.
IMAGE = f"localhost/c66-archiver:test-{hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:8]}"
USER = "65532"
BUILD_TIMEOUT = 900
# Proxies are build arguments Docker and buildah pass on without an ARG line.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# pip settings from the environment that the build's RUN steps would not see.
PIP_VARIABLES = {
    "PIP_INDEX_URL": "index-url",
    "PIP_EXTRA_INDEX_URL": "extra-index-url",
    "PIP_TRUSTED_HOST": "trusted-host",
    "PIP_CERT": "cert",
}


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _ensure_base_image() -> None:
    """Make the local Debian + python3 base unless it exists (cached between runs)."""
    if shutil.which("podman") and _run("podman", "image", "exists", BASE_IMAGE).returncode == 0:
        return
    script = "set -euo pipefail; source scripts/bootstrap.sh; bootstrap_image_base"
    made = subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )
    assert made.returncode == 0, f"could not make {BASE_IMAGE}: {made.stderr}"


def _host_pip_config(folder: Path) -> tuple[Path, list[str]]:
    """The host's pip settings as one pip.conf for the build, and the files it needs mounted.

    This machine reaches the package index through a proxy with its own CA,
    configured for pip on the host only; a build's RUN steps do not inherit it.
    """
    config = configparser.ConfigParser()
    for site_config in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf"):
        config.read(site_config)
    settings = dict(config["global"]) if config.has_section("global") else {}
    settings.pop("constraint", None)  # a host-only file of pins for other projects
    settings.pop("find-links", None)
    for variable, key in PIP_VARIABLES.items():
        if os.environ.get(variable):
            settings[key] = os.environ[variable]
    pip_conf = folder / "pip.conf"
    pip_conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    cert = settings.get("cert")
    return pip_conf, [cert] if cert and Path(cert).is_file() else []


def _build_command(pip_conf: Path, files: list[str]) -> list[str]:
    command = ["buildah", "bud", "--isolation", "chroot", "--network", "host", "--layers"]
    # Docker format keeps the HEALTHCHECK (the OCI format has no field for it).
    command += ["--format", "docker", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
    ca_bundle = "/etc/ssl/certs/ca-certificates.crt"
    for mounted in dict.fromkeys([ca_bundle, *files]):
        if Path(mounted).is_file():
            command += ["-v", f"{mounted}:{mounted}:ro"]
    for variable in PROXY_VARIABLES:
        if os.environ.get(variable):
            command += ["--build-arg", f"{variable}={os.environ[variable]}"]
    return [*command, "--build-arg", f"BASE={BASE_IMAGE}", "-t", IMAGE, str(REPO_ROOT)]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built from the repository's Dockerfile on the local base."""
    started = time.monotonic()
    _ensure_base_image()
    pip_conf, files = _host_pip_config(tmp_path_factory.mktemp("pip"))
    built = _run(*_build_command(pip_conf, files), timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    print(f"image built in {time.monotonic() - started:.1f}s")
    return IMAGE


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container from the image; removed afterwards whatever happens."""
    made = _run("buildah", "from", image)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip()
    try:
        yield name
    finally:
        _run("buildah", "rm", name)


def _run_in_argv(container: str, script: str, user: str | None, env: dict[str, str]) -> list[str]:
    as_user = ["--user", user] if user else []
    variables = [f"--env={name}={value}" for name, value in env.items()]
    return ["buildah", "run", "--isolation", "chroot", *as_user, *variables, container, "--",
            "sh", "-c", script]  # fmt: skip


def run_in(
    container: str, script: str, *, user: str | None = USER, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a shell script in the container as `user` (None: the image's USER)."""
    return _run(*_run_in_argv(container, script, user, env or {}))


async def run_in_async(
    container: str, script: str, *, env: dict[str, str]
) -> tuple[int, str, str]:
    """`run_in` without blocking the loop that serves the simulator and the receiver."""
    process = await asyncio.create_subprocess_exec(
        *_run_in_argv(container, script, USER, env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# The demo, then `health` on the demo's state: what the HEALTHCHECK runs.
DEMO_SCRIPT = """
set -e
id -u
c66-archiver demo --dir /data/demo > /dev/null
find /data/demo/archive -name manifest.json
cat > /data/demo.toml <<'EOF'
[[stacks]]
uid = "demo"
[storage]
type = "local"
path = "/data/demo/archive"
[state]
path = "/data/demo/state"
EOF
C66_ARCHIVER_CONFIG=/data/demo.toml c66-archiver health
"""


def test_demo_runs_in_the_image_as_the_non_root_user(container: str) -> None:
    """`c66-archiver demo` archives into /data as uid 65532, and `health` is green after it."""
    started = time.monotonic()
    result = run_in(container, DEMO_SCRIPT)
    print(f"demo ran in the container in {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == USER  # really not root
    manifests = [line for line in lines if line.endswith("/manifest.json")]
    assert len(manifests) >= 5
    assert all(line.startswith("/data/demo/archive/") for line in manifests)


# The age binary as [encryption] engine = "auto" finds it: on PATH, and it encrypts.
AGE_SCRIPT = """
set -e
age-keygen -o /data/age.key 2> /dev/null
/opt/c66-archiver/bin/python -c '
import subprocess
from archiver.transfer.age_process import choose_binary
public = subprocess.run(["age-keygen", "-y", "/data/age.key"], capture_output=True,
                        text=True, check=True).stdout.strip()
print(choose_binary("age", [public])[1])
'
"""


def test_the_image_encrypts_with_the_age_binary(container: str) -> None:
    """`age` is in the image, on PATH, and encrypts for the non-root user (engine = "age")."""
    result = run_in(container, AGE_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "age (/usr/bin/age)"


def test_image_defaults(container: str) -> None:
    """Non-root by default, the config path in the environment, /data owned by the user."""
    result = run_in(
        container,
        'id -u; echo "$C66_ARCHIVER_CONFIG"; stat -c "%u %a" /data; c66-archiver --version',
        user=None,  # the image's USER
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [USER, "/config/config.toml", f"{USER} 700"]
    inspected = _run("buildah", "inspect", "--format", "{{.Docker.Config.Healthcheck.Test}}",
                     container)  # fmt: skip
    assert "c66-archiver health" in inspected.stdout


# Every backend and tool a user may configure: the extras, age, and the lock's versions.
# Every module of the program imports: what the slimming removed (pygments, markdown-it,
# Markdown, PyYAML; see scripts/slim-venv.sh) is nothing any of them needs.
CONTENTS_SCRIPT = """
set -e
age --version
age-keygen --version
/opt/c66-archiver/bin/python -c 'import importlib, pkgutil, archiver
names = [m.name for m in pkgutil.walk_packages(archiver.__path__, "archiver.")
         if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
assert len(names) > 100, names
import apprise, archiver.storage.s3, archiver.storage.sftp, pyrage
import aiohttp; print(aiohttp.__version__)'
/opt/c66-archiver/bin/python -c 'import botocore.session  # the models kept: S3 and STS
session = botocore.session.get_session()
for service in ("s3", "sts"):
    session.create_client(service, region_name="eu-west-1", aws_access_key_id="k",
                          aws_secret_access_key="s")'
test ! -e /opt/c66-archiver/bin/pip && echo no-pip
"""


def _locked_version(package: str) -> str:
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{package}=="):
            return line.split("==")[1].split()[0]
    raise AssertionError(f"{package} is not in requirements.lock")


def test_the_image_has_every_extra_age_and_the_locked_versions(container: str) -> None:
    """Every module and extra imports, age is there for decrypting by hand, aiohttp is locked."""
    result = run_in(container, CONTENTS_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] == _locked_version("aiohttp")
    assert lines[-1] == "no-pip"  # nothing in the image installs packages at run time


# A pass in the image with `[notify] apprise_urls`: one stack archives, one cannot be
# listed, and Apprise (the [notify] extra) posts the failure to a json:// URL.
SYNC_SCRIPT = """
set -e
cat > /data/notify.toml <<'EOF'
{config}EOF
code=0
c66-archiver --config /data/notify.toml --log-format json sync || code=$?
echo "exit $code"
find /data/archive -name manifest.json
"""


async def test_a_pass_in_the_image_tells_its_failure_to_an_apprise_url(
    container: str, sim: Simulator, server: SimulatorServer, receiver: Receiver
) -> None:
    """The image sends notifications: a failed pass inside reaches an Apprise json:// URL."""
    sim.add_backup("stack-a", size=5000)
    sim.add_stack("stack-b")
    sim.faults.malformed_json_stacks = {"stack-b"}
    port = receiver.base_url.rsplit(":", 1)[1]
    config = render_toml({
        "api": {"base_url": server.base_url},
        "stacks": [{"uid": "stack-a"}, {"uid": "stack-b"}],
        "storage": {"type": "local", "path": "/data/archive"},
        "state": {"path": "/data/state"},
        "notify": {"apprise_urls": [f"json://127.0.0.1:{port}/apprise"], "retries": 0},
    })  # fmt: skip
    env = {"C66_API_TOKEN": TOKEN, "C66_ARCHIVER_FAST_RETRY": "1"}
    code, stdout, stderr = await run_in_async(
        container, SYNC_SCRIPT.format(config=config), env=env
    )
    assert code == 0, stdout + stderr
    assert "exit 1" in stdout.splitlines(), stdout + stderr  # the pass failed, as it should
    assert any(line.endswith("/manifest.json") for line in stdout.splitlines())  # stack-a
    (told,) = receiver.json_bodies("/apprise")
    assert told["title"].startswith("c66-archiver: pass failed on ")
    assert "stack-b" in told["message"]
    assert told["type"] == "failure"


def test_the_image_is_under_200_mb(image: str) -> None:
    """The size docs/deployment.md states: under 200 MB with every extra, Apprise included
    (390 MB before the slimming, 215 MB when Apprise came with its declared dependencies)."""
    inspected = _run("podman", "image", "inspect", "--format", "{{.Size}}", image)
    assert inspected.returncode == 0, inspected.stderr
    size = int(inspected.stdout.strip())
    print(f"image size: {size / 1e6:.1f} MB")
    assert size < 200_000_000
