"""`c66-archiver check-config`: the config loads, the token works, every destination takes writes
(and, where it asks for Object Lock, its bucket has it)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import click

from archiver.config.destinations import S3Destination, StorageSettings
from archiver.config.settings import Settings, encryption_for
from archiver.config.watch import describe_apprise_url
from archiver.core.errors import (
    EXIT_CONFIG,
    EXIT_OK,
    ApiError,
    AuthError,
    ConfigError,
    StorageError,
)
from archiver.core.secrets import redact
from archiver.storage import describe_storage, open_storage
from archiver.storage.destinations import object_lock_problem
from archiver.sync.api_client import api_client
from archiver.transfer.age_process import choose_binary


async def check_everything(settings: Settings, token: str) -> int:
    """Check the API and the storage; print one line per check; exit 0, 2 or 4."""
    click.echo(f"ok      config {settings.source}")
    api_ok = await _check_api(settings, token)
    storage_ok = await _check_storage(settings)
    _describe_notify(settings)
    encryption_ok = await _check_encryption(settings)
    return EXIT_OK if api_ok and storage_ok and encryption_ok else EXIT_CONFIG


def _describe_notify(settings: Settings) -> None:
    """Each Apprise URL by position and scheme (never the URL: it holds secrets)."""
    for index, url in enumerate(settings.notify.apprise_urls):
        click.echo(f"ok      notify {describe_apprise_url(index, url)}: Apprise can send to it")


async def _check_api(settings: Settings, token: str) -> bool:
    async with api_client(settings, token) as client:
        try:
            visible = {stack.uid for stack in await client.list_stacks()}
        except AuthError:
            raise
        except ApiError as error:
            click.echo(f"FAILED  api {settings.api.base_url}: {redact(str(error))}", err=True)
            return False
    missing = [stack.uid for stack in settings.stacks if stack.uid not in visible]
    if missing:
        click.echo(
            f"FAILED  stacks: the token cannot see {', '.join(missing)} "
            f"({len(visible)} stacks visible)",
            err=True,
        )
        return False
    click.echo(
        f"ok      api {settings.api.base_url}: token accepted, {len(visible)} stacks visible"
    )
    return True


async def _check_storage(settings: Settings) -> bool:
    """Probe every destination (and, where it asks for Object Lock, the bucket's lock)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="c66-check") as executor:
        checks = [await _check_destination(d, executor) for d in settings.storage]
    return all(checks)


async def _check_destination(destination: StorageSettings, executor: ThreadPoolExecutor) -> bool:
    storage = open_storage(destination, executor=executor)
    where = f"storage {destination.name!r} {describe_storage(destination)}"
    started = time.monotonic()
    try:
        lock_problem = await object_lock_problem(destination, storage)
        if lock_problem is not None:
            click.echo(f"FAILED  {where}: object_lock: {lock_problem}", err=True)
            return False
        await storage.probe()
    except StorageError as error:
        click.echo(f"FAILED  {where}: {error}", err=True)
        return False
    finally:
        await storage.aclose()
    elapsed = time.monotonic() - started
    locked = ", Object Lock on" if isinstance(destination, S3Destination) and (
        destination.object_lock
    ) else ""
    click.echo(f"ok      {where}: write, read back, delete{locked} ({elapsed:.2f}s)")
    return True


async def _check_encryption(settings: Settings) -> bool:
    """Which engine would encrypt, for each destination that encrypts: the age binary is
    tried as a pass would try it."""
    ok = True
    for destination in settings.storage:
        encryption = encryption_for(settings, destination)
        if encryption is None:
            continue
        recipients = encryption.all_recipients()
        where = f"encryption ({destination.name!r})" if len(settings.storage) > 1 else "encryption"
        try:
            _, engine = await asyncio.to_thread(choose_binary, encryption.engine, recipients)
        except ConfigError as error:
            click.echo(f"FAILED  {where}: {error}", err=True)
            ok = False
            continue
        click.echo(f"ok      {where}: {len(recipients)} recipient(s), by {engine}")
    return ok
