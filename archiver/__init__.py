"""c66-archiver: copy Cloud 66 managed database backups into storage you own."""

from __future__ import annotations

__version__ = "0.1.0"
