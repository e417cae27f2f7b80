"""structlog set-up, and redaction of secrets and URL query strings.

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

import collections
import logging
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, Literal, TextIO

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "add_secret",
    "clear_log_tail",
    "configure_logging",
    "get_logger",
    "log_tail",
    "redact",
]

REDACTED = "[REDACTED]"

LogFormat = Literal["auto", "json", "console"]

# Characters that end a query string or a parameter value. Quotes, angle
# brackets and backslashes end them so that a URL inside a repr
# (`URL('https://...')`) or inside already JSON-escaped text is cut cleanly;
# ESC ends them so that console colour codes survive.
_STOP = r"\s\"'<>`\\\x1b"
_URL_QUERY = re.compile(rf"(https?://[^{_STOP}?#]*)\?[^{_STOP}]*", re.IGNORECASE)
_SIGNING_PARAMETER = re.compile(
    rf"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|AWSAccessKeyId|Signature)=)"
    rf"[^&{_STOP}]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

_secrets_lock = threading.Lock()
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None


def add_secret(secret: str) -> None:
    """Register a value (the API token, a storage key) to be replaced wherever it appears."""
    global _secrets, _secret_pattern
    secret = secret.strip()
    if not secret:
        return
    with _secrets_lock:
        if secret in _secrets:
            return
        secrets = _secrets | {secret}
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(secrets, key=len, reverse=True)
        pattern = re.compile("|".join(re.escape(item) for item in ordered))
        # Readers take the pattern without the lock: one assignment is atomic.
        _secrets, _secret_pattern = secrets, pattern


def redact(text: str) -> str:
    """`text` without registered secrets, URL query strings, signing parameters or bearer tokens."""
    pattern = _secret_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    text = _SIGNING_PARAMETER.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def _redact_value(value: object) -> object:
    """Redact strings at any depth; other scalars pass; any other object becomes redacted text."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item) for item in value]
    # An object (exception, URL, path) would be rendered by its str or repr,
    # which may carry a URL: render it here, where we can still redact it.
    return redact(str(value))


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: redact every value of the event dict, nested ones and tracebacks included."""
    return {key: _redact_value(value) for key, value in event_dict.items()}


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


def _render_processors(as_json: bool, colors: bool) -> list[Processor]:
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
        structlog.dev.ConsoleRenderer(colors=colors),
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


class _TailHandler(logging.Handler):
    """Keeps the last rendered (and redacted) lines, for the failure ping's body."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # a line we cannot render is not worth failing the logger
            self.handleError(record)


# The last lines of the current pass; `clear_log_tail` starts a new pass's record.
TAIL_LINES = 50
_tail = _TailHandler(TAIL_LINES)
_handler: logging.Handler | None = None


def log_tail() -> list[str]:
    """The last lines logged since `clear_log_tail`, oldest first, already redacted."""
    return list(_tail.lines)


def clear_log_tail() -> None:
    """Forget the recorded lines: a pass is starting."""
    _tail.lines.clear()


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
    handler.setFormatter(_formatter(as_json, colors=terminal and not as_json))
    # The tail is plain console text without colours, whatever stderr gets.
    _tail.setFormatter(_formatter(as_json=False, colors=False))
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


def _formatter(as_json: bool, *, colors: bool) -> logging.Formatter:
    return _RedactingFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=_render_processors(as_json, colors=colors),
    )


def _route_stdlib_logging(handler: logging.Handler, level_number: int) -> None:
    """One handler (and the tail) on the root logger, replacing the previous one."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    if _tail not in root.handlers:
        root.addHandler(_tail)
    root.setLevel(level_number)
    # These libraries log every job run and connection at INFO: noise at our INFO.
    for noisy in _CHATTY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(level_number, logging.WARNING))
    _handler = handler


_CHATTY_LIBRARIES = ("apscheduler", "asyncssh", "aiobotocore", "botocore")


def _level_number(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


def get_logger(name: str | None = None, **initial_values: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; pass `__name__` so the `logger` field names the module."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial_values)
    return logger
