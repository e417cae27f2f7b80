"""`python -m archiver`, and the `c66-archiver` console script (`main`)."""

from __future__ import annotations

from archiver.core.startup import lean_imports, pause_collector


def main() -> None:
    """The command line, imported with the garbage collector paused (`archiver.core.startup`)."""
    pause_collector()
    lean_imports()
    from archiver.cli import main as command_line  # only now: start-up runs without the GC

    command_line()


if __name__ == "__main__":
    main()
