"""Start-up with the cyclic garbage collector paused.

Importing the program builds some 150,000 long-lived objects (aiohttp, pydantic
models, structlog, rich), and with the collector on, a collection every few
hundred allocations walks them again and again. The console script pauses the
collector before its first import (`pause_collector`); `startup_done`, called
once the command's imports are done, freezes everything built so far into the
permanent generation (`gc.freeze`: later collections skip it) and turns the
collector back on. Measured on a pass that archives a 1 KiB backup: 0.79 ->
0.55 CPU-s, nearly all of it on the path before the first byte.

`lean_imports` also has frozenlist (aiohttp's signal lists) use its pure-Python
class: its C++ extension maps libstdc++, 1 MiB resident, for a few short lists.

`import_structlog_lean` imports structlog without rich, which it loads (when
installed) only to offer rich tracebacks (`rich.traceback`, `rich.pretty`, and with
them pygments and attrs): about 5 MiB resident in every process. We never use them: exceptions
are formatted as plain text before redaction (`archiver.core.log`), locals never shown.
"""

from __future__ import annotations

import gc
import os
import sys

# structlog imports rich inside `try: ... except ImportError`, to format exceptions
# with it; hidden while structlog loads, it falls back to its plain formatters.
_HIDDEN_FROM_STRUCTLOG = "rich"

_paused = False


def pause_collector() -> None:
    """Turn the collector off until `startup_done`. Call before the big imports."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def startup_done() -> None:
    """Freeze what start-up built and resume the collector; a no-op unless we paused it."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def import_structlog_lean() -> None:
    """Import structlog before anything else does, without rich's traceback machinery.

    A no-op when structlog or rich is already loaded. Call from the entry point:
    rich stays importable for everyone afterwards (the progress display, tables).
    """
    if "structlog" in sys.modules or _HIDDEN_FROM_STRUCTLOG in sys.modules:
        return
    sys.modules[_HIDDEN_FROM_STRUCTLOG] = None  # type: ignore[assignment]  # `import` fails
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules[_HIDDEN_FROM_STRUCTLOG]


def lean_imports() -> None:
    """Before the first import of aiohttp and structlog: leave out what we never use."""
    os.environ.setdefault("FROZENLIST_NO_EXTENSIONS", "1")
    quiet_library_warnings()
    import_structlog_lean()


def quiet_library_warnings() -> None:
    """asyncssh names DSA types at import, and cryptography warns about each: five warning
    blocks on stderr of every command with an SFTP destination, about keys we never use.
    Matched by text, not class (importing cryptography here would cost every command)."""
    import warnings

    warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
