"""What every command shares: the global options, settings and token loaded once, and
the runner that turns a coroutine into an exit code (every failure one line on stderr)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from archiver.config.settings import Settings, load_settings, load_token, resolve_config_path
from archiver.core.errors import EXIT_PARTIAL, ArchiverError, exit_code_for
from archiver.core.log import configure_logging
from archiver.core.secrets import add_secret, redact
from archiver.core.startup import startup_done
from archiver.core.terminal import EXIT_CLOSED_PIPE, silence_closed_stdout

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_LOG_FORMATS = click.Choice(["auto", "json", "console"])
_F = TypeVar("_F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"c66-archiver: error: {redact(message)}", err=True)
    sys.exit(code)


def run(coroutine_factory: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a coroutine to its exit code, turning every error into one line."""
    startup_done()  # the command's imports are done: freeze them, resume the GC
    try:
        code = asyncio.run(coroutine_factory())
        sys.stdout.flush()  # here, where a reader that went away can still be caught
    except BrokenPipeError:
        # `status --json | head -c5`: the reader had enough. Not an error of ours.
        silence_closed_stdout()
        sys.exit(EXIT_CLOSED_PIPE)
    except ArchiverError as error:
        fail(str(error), exit_code_for(error))
    except KeyboardInterrupt:
        fail("interrupted", EXIT_PARTIAL)
    except Exception as error:  # last resort: still one line, never a traceback
        fail(f"unexpected {type(error).__name__}: {error}", EXIT_PARTIAL)
    sys.exit(code)


def storage_option(what: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    help_text = f"Only the destination named NAME ([[storage]] name). Default: {what}."
    return click.option("--storage", "storage", metavar="NAME", help=help_text)


def identity_option(purpose: str) -> Callable[[_F], _F]:
    """`--identity FILE`, the private key that decrypts an encrypted archive, for `purpose`."""
    return click.option(
        "--identity", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help=purpose,
    )


class Setup:
    """The global options, then settings and token loaded once with errors mapped to exit 2.

    The global options may come before or after the subcommand: each occurrence
    updates this one object (`_GLOBAL_OPTIONS`), and nothing reads them before the
    subcommand runs.
    """

    def __init__(self) -> None:
        self.config: str | None = None
        self.log_format: str | None = None
        self.verbose = False
        self.quiet = False

    @property
    def config_path(self) -> Path:
        """`--config`, else $C66_ARCHIVER_CONFIG, else the default path."""
        return resolve_config_path(self.config)

    def settings(self) -> Settings:
        self.log_level(None)  # -v with -q is a usage error before anything is read
        try:
            settings = load_settings(self.config_path)
        except ArchiverError as error:
            fail(str(error), exit_code_for(error))
        self.configure_logging(settings)
        return settings

    def log_level(self, settings: Settings | None) -> str:
        """-v: debug; -q: warnings and errors only; else the config's level."""
        if self.verbose and self.quiet:
            raise click.UsageError("-v/--verbose and -q/--quiet cannot be combined")
        if self.verbose:
            return "debug"
        if self.quiet:
            return "warning"
        return settings.log.level if settings else "info"

    def configure_logging(self, settings: Settings | None = None) -> None:
        log_settings = settings.log if settings else None
        configure_logging(
            format=self.log_format or (log_settings.format if log_settings else "auto"),  # type: ignore[arg-type]
            level=self.log_level(settings),
        )

    def token(self, settings: Settings) -> str:
        try:
            token = load_token(settings)
        except ArchiverError as error:
            fail(str(error), exit_code_for(error))
        add_secret(token)
        return token


def _remember(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """A global option's callback: note a value given here (an absent one changes nothing)."""

    def note(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(Setup), attribute, value)

    return note


def _global_options() -> list[click.Parameter]:
    """Fresh copies of the options every command takes, before or after its name."""
    common: dict[str, Any] = {"expose_value": False}
    return [
        click.Option(
            ["--config"], metavar="PATH", callback=_remember("config"), **common,
            help="Config file. Default: $C66_ARCHIVER_CONFIG, then /etc/c66-archiver/config.toml.",
        ),
        click.Option(
            ["-v", "--verbose"], is_flag=True, callback=_remember("verbose"), **common,
            help="Log debug events too.",
        ),
        click.Option(
            ["-q", "--quiet"], is_flag=True, callback=_remember("quiet"), **common,
            help="Only warnings and errors; no progress display.",
        ),
        click.Option(
            ["--log-format"], type=_LOG_FORMATS, callback=_remember("log_format"), **common,
            help="Log lines as JSON or for humans (default: for humans on a terminal).",
        ),
    ]


class Commands(click.Group):
    """A group whose commands (and their subcommands) all take the global options."""

    group_class = type  # `@group.group()` makes a Commands too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_global_options(cmd)
        super().add_command(cmd, name)


def _add_global_options(command: click.Command) -> None:
    present = {param.name for param in command.params}
    command.params.extend(p for p in _global_options() if p.name not in present)
