"""`python -m archiver` is the same program as the `c66-archiver` console script."""

from __future__ import annotations

from archiver.cli import main

if __name__ == "__main__":
    main()
