"""The two POSTs of the simulated API: create a backup task, and import an external backup.

Both are `POST /stacks/<uid>/backups` and need the token's `admin` scope (403
otherwise). Parameters may come as JSON (as the official client sends them), a
form body or the query. With `remote_url` it is an import: answered at once
("queued for upload"), then the URL is fetched in the background as Cloud 66
would, and what arrived (status, size, sha256) is kept in `Account.imports`.
Otherwise it creates a backup task, kept in `Account.backup_tasks`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import aiohttp
from aiohttp import web

from archiver.simulator.account import Account
from archiver.simulator.records import ImportRecord
from archiver.simulator.refusals import Refused, api_error

DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")
_CRON_FIELD = re.compile(r"[0-9*,/-]+|[A-Za-z]{3}(?:-[A-Za-z]{3})?")


async def read_params(request: web.Request) -> dict[str, Any]:
    """The parameters of a POST, from the query, a form body or a JSON body (later wins)."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise Refused(api_error(400, "bad_request", "the body must be a JSON object"))
        params.update(body)
    elif request.can_read_body:
        params.update(await request.post())
    return params


def require_admin(account: Account) -> None:
    """Refuse a token without the `admin` scope, as Cloud 66 does for its POSTs."""
    if "admin" not in account.token_scopes:
        raise Refused(
            api_error(403, "forbidden", "This action needs a token with the admin scope")
        )


def backup_task(params: dict[str, Any]) -> dict[str, Any]:
    """A checked backup task from the POST's parameters; 400 for anything malformed."""
    db_types = str(params.get("db_type", "all"))
    if db_types != "all" and not all(t in DB_TYPES for t in db_types.split(",")):
        raise _bad(f"db_type {db_types!r}: a comma list of {', '.join(DB_TYPES)}, or all")
    frequency = params.get("frequency")
    if frequency is not None and not _is_cron(str(frequency)):
        raise _bad(f"frequency {frequency!r} is not a cron schedule")
    task = {"db_type": db_types, "frequency": frequency}
    task["keep_count"] = _optional_int(params, "keep_count")
    task["gzip"] = _optional_bool(params, "gzip")
    task["run_on_replica_server"] = _optional_bool(params, "run_on_replica_server")
    task["excluded_tables"] = params.get("excluded_tables")
    return task


def import_request(stack_uid: str, params: dict[str, Any]) -> ImportRecord:
    """A checked import from the POST's parameters; 400 for anything malformed."""
    db_type = str(params.get("db_type", ""))
    if db_type not in DB_TYPES:
        raise _bad(f"db_type {db_type!r}: one of {', '.join(DB_TYPES)}")
    group = _optional_int(params, "group")
    if group is None:
        raise _bad("group is required")
    url = str(params["remote_url"])
    if not url.startswith(("http://", "https://")):
        raise _bad("remote_url must be an http(s) URL")
    return ImportRecord(stack_uid, group, db_type, url)


async def fetch_import(record: ImportRecord) -> None:
    """Download the remote URL as Cloud 66's importer would; note what arrived."""
    digest = hashlib.sha256()
    try:
        async with aiohttp.ClientSession() as session, session.get(record.remote_url) as answer:
            record.status = answer.status
            async for chunk in answer.content.iter_chunked(1 << 20):
                digest.update(chunk)
                record.size += len(chunk)
    except aiohttp.ClientError as error:
        record.error = type(error).__name__
    finally:
        record.sha256 = digest.hexdigest()
        record.done.set()


def _is_cron(text: str) -> bool:
    fields = text.split()
    return len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields)


def _optional_int(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise _bad(f"{name} must be a whole number")
    return int(value)


def _optional_bool(params: dict[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise _bad(f"{name} must be true or false")


def _bad(message: str) -> Refused:
    return Refused(api_error(400, "bad_request", message))
