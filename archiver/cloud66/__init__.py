"""The Cloud 66 API, and nothing else: knows no storage and no state."""

from __future__ import annotations

from archiver.cloud66.client import Cloud66Client
from archiver.cloud66.models import Backup, BackupFile, Stack

__all__ = ["Backup", "BackupFile", "Cloud66Client", "Stack"]
