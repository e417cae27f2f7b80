"""Start-up with the garbage collector paused, resumed once the imports are done."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from archiver.core import startup


@pytest.fixture
def collector() -> Iterator[None]:
    """Whatever a test does to the collector is undone."""
    was_enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    startup._paused = False


def test_startup_done_resumes_and_freezes_only_what_pause_stopped(collector: None) -> None:
    """pause -> off; startup_done -> on again, with the start-up objects frozen."""
    startup.pause_collector()
    assert not gc.isenabled()
    startup.startup_done()
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0


def test_startup_done_leaves_a_collector_it_did_not_pause_alone(collector: None) -> None:
    """A host that turned the GC off itself keeps it off (and nothing is frozen)."""
    gc.disable()
    startup.startup_done()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_the_entry_point_imports_the_command_line_with_the_collector_paused() -> None:
    """`python -m archiver` / the console script: the GC is off while the CLI loads."""
    code = (
        "import gc, sys, types\n"
        "fake = types.ModuleType('archiver.cli')\n"
        "fake.main = lambda: print(gc.isenabled())\n"
        "sys.modules['archiver.cli'] = fake\n"
        "import archiver.__main__\n"
        "archiver.__main__.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.stdout.split() == ["False"], done.stderr


def test_running_a_command_resumes_the_collector(collector: None) -> None:
    """The CLI's runner calls startup_done before its event loop starts."""
    from archiver.cli.base import run

    async def nothing() -> int:
        return 0

    startup.pause_collector()
    with pytest.raises(SystemExit) as exited:
        run(nothing)
    assert exited.value.code == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
