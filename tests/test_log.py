"""Logging: JSON lines off a terminal, stdlib loggers routed through structlog, redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from archiver.core.log import configure_logging, get_logger
from archiver.core.secrets import REDACTED, add_secret, redact

TOKEN = "c66tok_9f8e7d6c5b4a"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/backups/db.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Expires=3600&X-Amz-Signature=0123456789abcdef"
)
LEAKS = (TOKEN, "0123456789abcdef", "AKIAEXAMPLE", "X-Amz-Expires=3600")


class TerminalStream(io.StringIO):
    """A StringIO that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the stdlib root logger and structlog back as they were after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def stream() -> io.StringIO:
    return io.StringIO()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_leaks(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text


def test_json_lines_when_not_a_terminal(stream: io.StringIO) -> None:
    """Off a terminal each event is one JSON object with ISO UTC timestamp, level, event, logger."""
    configure_logging(stream=stream)
    get_logger("archiver.sync.sync_pass").info("pass started", stacks=2)
    (line,) = json_lines(stream)
    assert line["event"] == "pass started"
    assert line["level"] == "info"
    assert line["logger"] == "archiver.sync.sync_pass"
    assert line["stacks"] == 2
    assert line["timestamp"].endswith("Z")
    assert list(line)[:4] == ["timestamp", "level", "logger", "event"]


def test_console_lines_on_a_terminal() -> None:
    """On a terminal, format auto renders console lines with colours, not JSON."""
    terminal = TerminalStream()
    configure_logging(stream=terminal)
    get_logger("archiver.sync.sync_pass").info("pass started", stacks=2)
    output = terminal.getvalue()
    assert "pass started" in output
    assert "\x1b[" in output
    with pytest.raises(json.JSONDecodeError):
        json.loads(output)


def test_json_forced_on_a_terminal() -> None:
    """format="json" renders JSON even on a terminal."""
    terminal = TerminalStream()
    configure_logging(format="json", stream=terminal)
    get_logger("x").info("hello")
    assert json.loads(terminal.getvalue())["event"] == "hello"


def test_console_forced_off_a_terminal_has_no_colours(stream: io.StringIO) -> None:
    """format="console" off a terminal writes plain console lines without escape codes."""
    configure_logging(format="console", stream=stream)
    get_logger("x").info("hello", n=1)
    assert "hello" in stream.getvalue()
    assert "\x1b[" not in stream.getvalue()


def test_configure_twice_writes_each_line_once(stream: io.StringIO) -> None:
    """configure_logging is idempotent: a second call replaces, not adds, the handler."""
    first = io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=stream)
    get_logger("x").info("once")
    logging.getLogger("aiohttp.client").warning("once too")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(stream)] == ["once", "once too"]


def test_logger_created_before_configure_follows_it(stream: io.StringIO) -> None:
    """A module-level logger made before configure_logging still uses the new set-up."""
    early = get_logger("archiver.early")
    configure_logging(stream=stream)
    early.info("late")
    assert json_lines(stream)[0]["logger"] == "archiver.early"


def test_stdlib_logger_routed_as_json(stream: io.StringIO) -> None:
    """A stdlib logger (APScheduler's) comes out as a JSON line with the same fields."""
    configure_logging(stream=stream)
    logging.getLogger("apscheduler.executors.default").warning("job %s missed", "sync")
    (line,) = json_lines(stream)
    assert line["event"] == "job sync missed"
    assert line["level"] == "warning"
    assert line["logger"] == "apscheduler.executors.default"
    assert line["timestamp"].endswith("Z")


def test_level_filtering(stream: io.StringIO) -> None:
    """Below the configured level nothing is written, from structlog or stdlib loggers."""
    configure_logging(stream=stream, level="warning")
    log = get_logger("x")
    log.info("dropped")
    logging.getLogger("aiohttp").info("dropped too")
    log.warning("kept")
    logging.getLogger("asyncssh").error("kept too")
    assert [line["event"] for line in json_lines(stream)] == ["kept", "kept too"]


def test_debug_level_lets_debug_through(stream: io.StringIO) -> None:
    """level="debug" writes debug events."""
    configure_logging(stream=stream, level="debug")
    get_logger("x").debug("detail")
    assert json_lines(stream)[0]["level"] == "debug"


def test_unknown_level_is_rejected(stream: io.StringIO) -> None:
    """An unknown level name is a ValueError, not a silent default."""
    with pytest.raises(ValueError, match="loud"):
        configure_logging(stream=stream, level="loud")


def test_token_redacted_in_message_and_values(stream: io.StringIO) -> None:
    """A registered token never reaches the output, in the event or in key-values."""
    configure_logging(stream=stream, secrets=[TOKEN])
    get_logger("x").info(f"calling with {TOKEN}", header=f"Authorization: Bearer {TOKEN}")
    assert_no_leaks(stream.getvalue())
    assert REDACTED in json_lines(stream)[0]["event"]


def test_secret_added_at_runtime(stream: io.StringIO) -> None:
    """add_secret after configure_logging takes effect for the next line."""
    configure_logging(stream=stream)
    add_secret("late-secret-value")
    get_logger("x").info("value", v="xx late-secret-value xx")
    assert json_lines(stream)[0]["v"] == f"xx {REDACTED} xx"


def test_presigned_url_query_redacted_everywhere(stream: io.StringIO) -> None:
    """The query of a pre-signed URL is stripped in messages, nested values and URL reprs."""
    configure_logging(stream=stream)

    class Url:  # what yarl.URL's repr looks like
        def __str__(self) -> str:
            return f"URL('{PRESIGNED}')"

    get_logger("x").warning(
        f"GET {PRESIGNED} failed",
        url=PRESIGNED,
        nested={"parts": [{"public_url": PRESIGNED}], "pair": (1, PRESIGNED)},
        obj=Url(),
    )
    output = stream.getvalue()
    assert_no_leaks(output)
    line = json_lines(stream)[0]
    assert line["url"] == f"https://bucket.s3.amazonaws.com/backups/db.tar?{REDACTED}"
    assert line["nested"]["parts"][0]["public_url"] == line["url"]
    assert line["obj"] == f"URL('{line['url']}')"


def test_exception_traceback_redacted(stream: io.StringIO) -> None:
    """log.exception with a presigned URL and the token in the error leaks neither."""
    configure_logging(stream=stream, secrets=[TOKEN])
    try:
        raise RuntimeError(f"403 for url {PRESIGNED} with token {TOKEN}")
    except RuntimeError:
        get_logger("x").exception("download failed")
    assert_no_leaks(stream.getvalue())
    (line,) = json_lines(stream)
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert "https://bucket.s3.amazonaws.com/backups/db.tar?" in exception["exc_value"]


def test_traceback_carries_no_locals(stream: io.StringIO) -> None:
    """JSON tracebacks leave frame locals out (they may hold unregistered secrets)."""
    configure_logging(stream=stream)
    password = "local-variable-value"
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("x").exception("failed")
    assert password not in stream.getvalue()


def test_stdlib_exception_redacted(stream: io.StringIO) -> None:
    """A stdlib logger's exception (aiohttp's ClientResponseError text) is one redacted line."""
    configure_logging(stream=stream, secrets=[TOKEN])
    try:
        raise OSError(f"{PRESIGNED} Authorization: Bearer {TOKEN}")
    except OSError:
        logging.getLogger("aiohttp.client").exception("request failed")
    assert_no_leaks(stream.getvalue())
    (line,) = json_lines(stream)
    assert line["exception"][0]["exc_type"] == "OSError"


def test_console_exception_redacted(stream: io.StringIO) -> None:
    """The console renderer's traceback text is redacted too."""
    configure_logging(format="console", stream=stream, secrets=[TOKEN])
    try:
        raise RuntimeError(f"{PRESIGNED} {TOKEN}")
    except RuntimeError:
        get_logger("x").exception("download failed")
    output = stream.getvalue()
    assert "RuntimeError" in output
    assert_no_leaks(output)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://h/p?a=1&b=2", f"https://h/p?{REDACTED}"),
        ("see (https://h/p?a=1) now", f"see (https://h/p?{REDACTED} now"),
        ("HTTP://H/P?A=1 and http://x/?y", f"HTTP://H/P?{REDACTED} and http://x/?{REDACTED}"),
        ("url='https://h/p?a=1'", f"url='https://h/p?{REDACTED}'"),
        ("https://h/path/without/query", "https://h/path/without/query"),
        ("Signature=abc%2Bdef&Expires=9", f"Signature={REDACTED}&Expires=9"),
        ("x-amz-signature=abc", f"x-amz-signature={REDACTED}"),
        ("AWSAccessKeyId=AKIA123 rest", f"AWSAccessKeyId={REDACTED} rest"),
        ("X-Amz-Credential=AKIA/2026/s3", f"X-Amz-Credential={REDACTED}"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}"),
        ("plain text, nothing secret", "plain text, nothing secret"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    """redact() strips URL queries, signing parameters and bearer tokens, and nothing else."""
    assert redact(text) == expected


def test_redact_is_idempotent() -> None:
    """Redacting twice gives the same text (the rendered line is redacted again)."""
    once = redact(f"GET {PRESIGNED} Bearer abc Signature=x")
    assert redact(once) == once


def test_redact_registered_secret() -> None:
    """A registered secret is replaced anywhere, also without URL or keyword around it."""
    add_secret("  standalone-secret-42\n")
    assert redact("a standalone-secret-42 b") == f"a {REDACTED} b"


def test_blank_secret_is_ignored() -> None:
    """Registering an empty or blank secret redacts nothing."""
    add_secret("")
    add_secret("   ")
    assert redact("a b c") == "a b c"


def test_default_stream_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a stream, lines go to sys.stderr as it is when written (rich's live proxy)."""
    configure_logging(format="json")
    swapped = io.StringIO()
    monkeypatch.setattr("sys.stderr", swapped)
    get_logger("x").info("to the current stderr")
    assert json_lines(swapped)[0]["event"] == "to the current stderr"


def test_console_lines_are_one_short_line_a_backup() -> None:
    """At info, a person's line is `time event stack db #id size`: no sha256, location or logger."""
    terminal = TerminalStream()
    configure_logging(format="console", stream=terminal)
    with structlog.contextvars.bound_contextvars(stack_uid="stack-a", backup_id=7, db_type="mysql"):
        get_logger("archiver.sync.sync_pass").info(
            "backup archived", size=11_849_728, sha256="ab" * 32, location="/var/lib/x/shop.tar"
        )
    (line,) = terminal.getvalue().splitlines()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert re.fullmatch(r"\d\d:\d\d:\d\d backup archived stack-a mysql #7 11\.3 MiB", plain), plain


def test_verbose_console_lines_keep_every_field() -> None:
    """With -v (debug) the fields left off at info come back."""
    stream = io.StringIO()
    configure_logging(format="console", stream=stream, level="debug")
    get_logger("archiver.sync.sync_pass").info("backup archived", sha256="ab" * 32, size=10)
    assert "sha256=" + "ab" * 32 in stream.getvalue()
    assert "logger=archiver.sync.sync_pass" in stream.getvalue()


def test_warnings_and_errors_are_marked_and_say_why_after_a_colon() -> None:
    """A warning or error says so first; its reason follows the event after a colon."""
    stream = io.StringIO()
    configure_logging(format="console", stream=stream)
    get_logger("x").error("could not archive", stack_uid="s", backup_id=3, reason="HTTP 500")
    line = stream.getvalue().strip()
    assert line.endswith("error: could not archive s #3: HTTP 500")


def test_verbose_leaves_out_asyncio_selector_noise(stream: io.StringIO) -> None:
    """-v shows our debug lines, not asyncio's `Using selector: EpollSelector`."""
    configure_logging(stream=stream, level="debug")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    get_logger("x").debug("ours")
    assert [line["event"] for line in json_lines(stream)] == ["ours"]
