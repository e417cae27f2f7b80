"""`c66-archiver check-config`: the config loads, the token works, the storage takes writes."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import click

from archiver.config.settings import Settings
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
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="c66-check") as executor:
        storage = open_storage(settings.storage, executor=executor)
        where = describe_storage(settings.storage)
        started = time.monotonic()
        try:
            await storage.probe()
        except StorageError as error:
            click.echo(f"FAILED  storage {where}: {error}", err=True)
            return False
        finally:
            await storage.aclose()
    elapsed = time.monotonic() - started
    click.echo(f"ok      storage {where}: write, read back, delete ({elapsed:.2f}s)")
    return True


async def _check_encryption(settings: Settings) -> bool:
    """Which engine would encrypt: the age binary is tried as a pass would try it."""
    encryption = settings.encryption
    if encryption is None:
        return True
    recipients = encryption.all_recipients()
    try:
        _, engine = await asyncio.to_thread(choose_binary, encryption.engine, recipients)
    except ConfigError as error:
        click.echo(f"FAILED  encryption: {error}", err=True)
        return False
    click.echo(f"ok      encryption: {len(recipients)} recipient(s), by {engine}")
    return True
