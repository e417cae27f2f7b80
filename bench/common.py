"""Shared by the benchmark's parts: paths, the archiver command, configs, byte counting."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from measure_io import Measured, run_measured

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `loopback` (the servers) is not installed: the checkout's
    sys.path.insert(0, str(REPO_ROOT))
TOKEN = "bench-token-5c0ffee5c0ffee"  # noqa: S105 - the simulator's throwaway token
# High enough that the client-side budget never paces a benchmark pass.
REQUESTS_PER_HOUR = 100_000
CONCURRENCY = 4
MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30


def archiver_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m archiver``."""
    script = Path(sys.executable).with_name("c66-archiver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "archiver"]


def child_env() -> dict[str, str]:
    """Our environment without anything that would change the archiver's behaviour."""
    dropped = ("C66_API_TOKEN", "C66_ARCHIVER_CONFIG", "C66_ARCHIVER_FAST_RETRY")
    return {name: value for name, value in os.environ.items() if name not in dropped}


def fresh_dir(path: Path) -> Path:
    """An empty folder at ``path`` (whatever was there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def quoted(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Extra `[transfer]` lines for every archiver run (e.g. from --no-verify-etag).
TRANSFER_EXTRA: list[str] = []


def write_config(
    folder: Path,
    base_url: str,
    stack_uids: Iterable[str],
    storage: Iterable[str] = (),
    transfer: Iterable[str] = (),
) -> Path:
    """A config archiving ``stack_uids`` into ``folder/archive``, state in ``folder/state``.

    ``storage``: the lines of another ``[storage]`` table (without its header) instead.
    ``transfer``: more ``[transfer]`` lines for this config only.
    """
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    lines = [
        "[api]",
        f"base_url = {quoted(base_url)}",
        f"token_file = {quoted(str(token_file))}",
        f"requests_per_hour = {REQUESTS_PER_HOUR}",
        "[storage]",
        *(list(storage) or ['type = "local"', f"path = {quoted(str(folder / 'archive'))}"]),
        "[state]",
        f"path = {quoted(str(folder / 'state'))}",
        "[transfer]",
        f"max_concurrent_downloads = {CONCURRENCY}",
        *TRANSFER_EXTRA,
        *transfer,
        "[log]",
        'format = "json"',
    ]
    for uid in stack_uids:
        lines += ["[[stacks]]", f"uid = {quoted(uid)}"]
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def run_archiver_sync(
    folder: Path, config: Path, tree: Path | None = None, env: dict[str, str] | None = None
) -> Measured:
    """One ``c66-archiver --config CFG sync`` process, measured; its stderr kept in a file.

    ``env``: more environment variables for it.
    ``tree``: run the ``archiver`` package of that source tree instead (another commit,
    e.g. from ``git archive``), as ``python -m archiver`` with the tree first on the path.
    """
    extra_env = env or {}
    env, cwd, command = {**child_env(), **extra_env}, REPO_ROOT, archiver_command()
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
        cwd, command = tree, [sys.executable, "-m", "archiver"]
    argv = [*command, "--config", str(config), "sync"]
    with (folder / "archiver.log").open("wb") as log:
        return run_measured(argv, env=env, cwd=cwd, stdout=log, stderr=log)


def log_tail(folder: Path, lines: int = 15) -> str:
    """The end of an archiver log, for error messages."""
    path = folder / "archiver.log"
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def tar_bytes(root: Path) -> int:
    """Total size of the archived ``.tar`` files under ``root``."""
    return sum(path.stat().st_size for path in root.rglob("*.tar") if path.is_file())


def busy_cpu_seconds() -> float:
    """CPU time spent by everything on the machine so far (/proc/stat, all CPUs)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one running process (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The one-minute load average: other work on the machine skews every figure."""
    return os.getloadavg()[0]


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)
