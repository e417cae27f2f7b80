"""The report as Markdown: environment, headline table with targets, rounds, notes."""

from __future__ import annotations

from typing import Any

import offsite
import transfer
from common import MB, MIB
from report import NOTES
from steady import SteadyResult
from throughput import Round, ThroughputResult

_TARGET_RATIO = 0.9
_TARGET_RSS_MIB = 100.0
_TARGET_WRITTEN = 1.05


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def header(title: str, env: dict[str, Any], command: str) -> list[str]:
    """Title, command and the machine it ran on."""
    return [
        f"# {title}",
        "",
        f"`{command}` at {env['commit']}, {env['date']}",
        "",
        f"- CPU: {env['cpus']} ({env['cpus_usable']} usable), memory {env['memory_gib']} GiB; "
        f"{env['platform']}",
        f"- Python {env['python']}, c66-archiver {env['archiver']}, aiohttp {env['aiohttp']}; "
        f"{env['curl']}",
        f"- Disk: {env['filesystem']}, {env['disk_free_gib']} GiB free, workdir {env['workdir']} "
        f"(same disk as the repo: {env['same_disk_as_repo']})",
        f"- Load average (1 min) at start: {env['load_average_start']:.2f}, at end: "
        f"{env.get('load_average_end', float('nan')):.2f}"
        + (" -- **other work was running: figures are skewed**"
           if max(env['load_average_start'], env.get('load_average_end', 0.0)) > 0.7 else ""),
        "",
    ]


def throughput_rows(result: ThroughputResult, figures: dict[str, Any]) -> list[str]:
    """Headline rows of the throughput part."""
    ours, curl, ratio = figures["archiver"], figures["curl"], figures["throughput_ratio"]
    ours_w, curl_w = ours["written_per_byte_max"], curl["written_per_byte_max"]
    return [
        _row("Wall time, median (s)", f"{ours['wall_seconds']:.2f}",
             f"{curl['wall_seconds']:.2f}", "", ""),
        _row("Throughput, median (MB/s)", f"{ours['mb_per_second']:.0f}",
             f"{curl['mb_per_second']:.0f}", "", ""),
        _row("Throughput vs curl", f"{ratio:.2f}x", "1.00x", f">= {_TARGET_RATIO}x",
             _met(ratio >= _TARGET_RATIO)),
        _row("Peak RSS, max over rounds (MiB)", f"{ours['max_rss_mib']:.1f}",
             f"{curl['max_rss_mib']:.1f} (one curl)", f"< {_TARGET_RSS_MIB:.0f}",
             _met(ours["max_rss_mib"] < _TARGET_RSS_MIB)),
        _row("CPU (user+sys) per GiB, median (s)", f"{ours['cpu_seconds_per_gib']:.2f}",
             f"{curl['cpu_seconds_per_gib']:.2f}", "", ""),
        _row("Bytes written / byte archived, max", _fmt(ours_w), _fmt(curl_w),
             f"<= {_TARGET_WRITTEN}", _met(ours_w is not None and ours_w <= _TARGET_WRITTEN)),
    ]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def steady_rows(result: SteadyResult) -> list[str]:
    """Headline rows of the steady-state part."""
    steady, first = result.steady, result.first
    per_page = result.requests_per_stack_page
    backups = result.stacks * result.backups_per_stack
    return [
        _row(f"Steady pass, {result.stacks} stacks: API requests",
             f"{steady.api_requests} ({per_page:.2f} per stack page, "
             f"{steady.downloads_started} downloads)", "",
             f"{result.stack_pages} (1 per stack page)",
             _met(steady.api_requests == result.stack_pages and steady.downloads_started == 0)),
        _row("Steady pass: wall time / CPU (s)",
             f"{steady.wall_seconds:.2f} / {steady.cpu_seconds:.2f}", "", "", ""),
        _row(f"First pass ({backups} x 1 KiB backups): wall (s), requests",
             f"{first.wall_seconds:.2f}, {first.api_requests}", "", "", ""),
    ]


def rounds_table(result: ThroughputResult) -> list[str]:
    """Every timed round, in the order it ran."""
    lines = [
        "",
        f"Data set: 1 x {result.sizes.big / MIB:.0f} MiB backup "
        f"({result.sizes.big_parts} parts of at most {result.sizes.part_size / MB:.2f} MB) + "
        f"{result.sizes.small_count} x {result.sizes.small / MIB:.0f} MiB = "
        f"{result.sizes.total / MB:,.0f} MB per round (generated in "
        f"{result.generate_seconds:.0f} s, before timing).",
        "",
        _row("Round", "Tool", "Wall (s)", "MB/s", "CPU (s)", "Peak RSS (MiB)",
             "Written / archived", "Others' CPU (s)"),
        _row(*["---"] * 8),
    ]
    lines += [_round_row(r) for r in result.rounds]
    return lines


def _round_row(r: Round) -> str:
    written = "n/a" if r.write_bytes is None else f"{r.write_bytes / r.bytes:.3f}"
    return _row(r.index, r.tool, f"{r.wall_seconds:.2f}", f"{r.mb_per_second:.0f}",
                f"{r.cpu_seconds:.2f}", f"{r.max_rss_bytes / MIB:.1f}", written,
                f"{r.foreign_cpu_seconds:.2f}")


def render(
    title: str,
    env: dict[str, Any],
    command: str,
    figures: dict[str, Any],
    throughput: ThroughputResult | None,
    steady: SteadyResult | None,
    offsite_result: offsite.OffsiteResult | None = None,
    transfer_result: transfer.TransferResult | None = None,
) -> str:
    """The whole Markdown report."""
    lines = header(title, env, command)
    if throughput is not None or steady is not None:
        lines += [_row("Measure", "c66-archiver", "curl + sync", "Target", "Met"),
                  _row(*["---"] * 5)]
    if throughput is not None:
        lines += throughput_rows(throughput, figures)
    if steady is not None:
        lines += steady_rows(steady)
    if throughput is not None:
        lines += rounds_table(throughput)
    if throughput is not None or steady is not None:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in NOTES]
    if transfer_result is not None:
        lines += ["", *transfer.render(transfer_result, figures["transfer"])]
    if offsite_result is not None:
        lines += ["", *offsite.render(offsite_result, figures["offsite"])]
    return "\n".join(lines) + "\n"
