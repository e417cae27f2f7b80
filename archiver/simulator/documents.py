"""The JSON the simulated Cloud 66 API answers with: the list envelope and its pagination,
stacks, backups and backup files, with the fields of the upstream documents."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any

from archiver.simulator.blobs import safe_segment
from archiver.simulator.records import Backup, Part, Stack

# What a failed backup says when a test does not choose (Cloud 66's usual wording).
FAILED_RESULT = "mysqldump: Got error 2013: Lost connection to MySQL server during query"


def envelope(items: list[dict[str, Any]], page: int, per_page: int) -> dict[str, Any]:
    """Cloud 66's list envelope: page ``page`` of ``items``, the total and the pagination."""
    total = len(items)
    pages = max(1, math.ceil(total / per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    pagination = {
        "previous": page - 1 if page > 1 else None,
        "next": page + 1 if page < pages else None,
        "current": page,
        "per_page": per_page,
        "count": total,
        "pages": pages,
    }
    return {"response": chunk, "count": total, "pagination": pagination}


def stack_json(stack: Stack) -> dict[str, Any]:
    """A stack as the API lists it."""
    created = _iso(stack.created_at)
    return {
        "uid": stack.uid,
        "name": stack.name,
        "environment": stack.environment,
        "git": "",
        "git_branch": "main",
        "cloud": "aws",
        "fqdn": f"{safe_segment(stack.uid).lower()}.c66.me",
        "language": "ruby",
        "framework": "rails",
        "status": 1,
        "health": 3,
        "maintenance_mode": False,
        "has_loadbalancer": False,
        "created_at_iso": created,
        "updated_at_iso": created,
        "last_activity_iso": created,
        "redeploy_hook": None,
    }


def backup_json(backup: Backup) -> dict[str, Any]:
    """A backup as the API lists and shows it; a failed one (status 1) carries an error."""
    server_uid = hashlib.sha1(backup.stack_uid.encode(), usedforsecurity=False).hexdigest()
    when = _iso(backup.backup_date)
    stamp = backup.backup_date.astimezone(UTC).strftime("%Y.%m.%d.%H.%M.%S")
    return {
        "id": backup.id,
        "server_uid": server_uid,
        "db_type": backup.db_type,
        "database_name": backup.database_name,
        "file_base": "",
        "backup_date_iso": when,
        "backup_status": backup.status,
        "backup_result": "" if backup.status == 0 else (backup.result or FAILED_RESULT),
        "restore_status": 0,
        "restore_result": None,
        "created_at_iso": when,
        "updated_at_iso": when,
        "verify_status": 0,
        "verify_result": None,
        "storage_path": f"{server_uid[:32]}/backups/{safe_segment(backup.stack_uid)}/"
        f"{backup.db_type}/{backup.database_name}/{stamp}",
        "skip_tables": "",
        "backup_size": 0,
        "logical_backup": False,  # unknown to old clients: they must ignore it
    }


def file_json(part: Part) -> dict[str, Any]:
    """A backup file as the API lists it: its id and name only."""
    return {"id": part.file_id, "name": part.name}


def _iso(moment: datetime) -> str:
    """A moment in UTC, to the second, as the API's ``*_iso`` fields give it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
