"""The command line (`c66-archiver`): the click group in `app`, its commands beside it."""

from archiver.cli.app import main

__all__ = ["main"]
