"""structlog set-up: JSON lines for machines, console lines for people, secrets redacted.

Every line, ours and the stdlib loggers' (APScheduler, aiohttp, asyncssh),
goes through one stdlib handler whose `ProcessorFormatter` renders JSON
lines or console lines with the same processors. Redaction runs after the
exception is formatted, because exception text carries URLs, and once more on
the rendered line, because renderers turn objects (a `yarl.URL`, an
exception) into text we never saw as a string.

Call `configure_logging` once at start, before anything logs: until then
structlog's built-in defaults apply and nothing is redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from archiver.core.console_log import HumanRenderer
from archiver.core.log_tail import TAIL
from archiver.core.secrets import add_secret, redact, redact_event

__all__ = ["configure_logging", "get_logger", "renders_for_people"]

LogFormat = Literal["auto", "json", "console"]

_LEADING_KEYS = ("timestamp", "level", "logger", "event")


def _lead_with_standard_keys(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> EventDict:
    """Processor: put timestamp, level, logger and event first, for people reading JSON lines."""
    leading = {key: event_dict[key] for key in _LEADING_KEYS if key in event_dict}
    leading.update(event_dict)
    return leading


def _shared_processors() -> list[Processor]:
    """What both structlog and stdlib records get before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]


def _render_processors(as_json: bool, colors: bool, verbose: bool = False) -> list[Processor]:
    """Exception formatting, then redaction, then the renderer: in that order."""
    if as_json:
        return [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Locals stay out: a frame's locals may hold the token or a signed URL.
            ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_event,
            _lead_with_standard_keys,
            structlog.processors.JSONRenderer(),
        ]
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        # Plain text, so redaction sees it: the console renderer's own rich
        # tracebacks would be drawn after redaction, locals and all.
        structlog.processors.format_exc_info,
        redact_event,
        HumanRenderer(colors=colors, verbose=verbose),
    ]


class _RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """A ProcessorFormatter that redacts the rendered line once more."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of writing.

    rich's live display swaps `sys.stderr` for a proxy that prints above the
    progress bars; a handler that kept the original stream would garble them.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignore: the stream is always the current sys.stderr."""


# The stream handler configure_logging installed last (replaced on a second call).
_handler: logging.Handler | None = None


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def configure_logging(
    *,
    format: LogFormat = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Set up structlog and stdlib logging; safe to call again (tests, reloads).

    `format="auto"` is console lines on a terminal, JSON lines otherwise.
    `stream` defaults to the current `sys.stderr`, looked up at each write.
    `secrets` are added to those registered with `add_secret`.
    """
    level_number = _level_number(level)  # first, so a bad level changes nothing
    for secret in secrets:
        add_secret(secret)
    terminal = _is_terminal(stream if stream is not None else sys.stderr)
    as_json = format == "json" or (format == "auto" and not terminal)
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    verbose = level_number <= logging.DEBUG
    handler.setFormatter(_formatter(as_json, colors=terminal and not as_json, verbose=verbose))
    # The tail (sent with failure alerts) is plain console text without colours, whatever
    # stderr gets, with every field: it is read once something went wrong.
    TAIL.setFormatter(_formatter(as_json=False, colors=False, verbose=True))
    _route_stdlib_logging(handler, level_number)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(ignore_frame_names=[__name__]),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before (re)configuration must follow it.
        cache_logger_on_first_use=False,
    )


def _formatter(as_json: bool, *, colors: bool, verbose: bool = False) -> logging.Formatter:
    return _RedactingFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=_render_processors(as_json, colors=colors, verbose=verbose),
    )


def _route_stdlib_logging(handler: logging.Handler, level_number: int) -> None:
    """One handler (and the tail) on the root logger, replacing the previous one."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    if TAIL not in root.handlers:
        root.addHandler(TAIL)
    root.setLevel(level_number)
    # These libraries log every job run and connection at INFO: noise at our INFO.
    for noisy in _CHATTY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(level_number, logging.WARNING))
    _handler = handler


# asyncio: its one debug line ("Using selector: EpollSelector") says nothing to a user.
_CHATTY_LIBRARIES = (
    "apscheduler", "asyncssh", "aiobotocore", "botocore", "asyncio", "apprise",
)


def renders_for_people() -> bool:
    """True when log lines go to stderr as console lines (a person reads them), not JSON."""
    if _handler is None or _handler.formatter is None:
        return False
    processors = getattr(_handler.formatter, "processors", ())
    return any(isinstance(processor, HumanRenderer) for processor in processors)


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; pass `__name__` so the `logger` field names the module."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
