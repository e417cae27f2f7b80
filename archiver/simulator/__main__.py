"""`python -m archiver.simulator`: serve a simulated Cloud 66 account until SIGTERM/SIGINT."""

from __future__ import annotations

from archiver.simulator.cli import main

if __name__ == "__main__":
    main()
