"""c66-archiver: copy Cloud 66 managed database backups into storage you own."""

from __future__ import annotations

__version__ = "0.1.0"

# Sent with every HTTP request we make (API, downloads, alerts).
USER_AGENT = f"c66-archiver/{__version__}"
