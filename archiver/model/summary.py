"""What a pass did: the summary every observer (metrics, alerts, systemd) hears about.

A module of its own, importing nothing of the pass, so that the pass and its
observers can both depend on it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archiver.core.errors import EXIT_AUTH, EXIT_OK, EXIT_PARTIAL, AuthError
from archiver.core.units import human_bytes
from archiver.state.records import RunRecord


@dataclass(frozen=True)
class Failure:
    """Something that could not be archived in this pass, and why; `storage` names the
    destination when the trouble was one destination's (None: the backup's, or a stack's)."""

    stack_uid: str
    backup_id: int | None
    reason: str
    storage: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The `status --json` form."""
        return {
            "stack_uid": self.stack_uid,
            "backup_id": self.backup_id,
            "reason": self.reason,
            "storage": self.storage,
        }


@dataclass
class PassSummary:
    """The outcome of one pass."""

    started_at: str
    finished_at: str = ""
    archived: int = 0
    skipped: int = 0
    already: int = 0
    pruned: int = 0
    filled: int = 0  # copies made from another destination's copy (no Cloud 66 involved)
    bytes: int = 0
    seconds: float = 0.0
    failed: list[Failure] = field(default_factory=list)
    auth_error: AuthError | None = None
    stopped: bool = False  # a stop (SIGTERM) left some of the pass's work for the next one
    left_due: bool = False  # ... and that work included backups due (not only prune, watch)

    @property
    def outcome(self) -> str:
        """"ok" (everything due was archived), "failed" (something could not be), or
        "stopped" (nothing failed, but a stop left backups due for the next pass)."""
        if self.failed or self.auth_error is not None:
            return "failed"
        return "stopped" if self.left_due else "ok"

    @property
    def ok(self) -> bool:
        """True when everything due was archived: a pass a stop cut short is not a good pass
        (health's "last successful pass" stays the one before it)."""
        return self.outcome == "ok"

    @property
    def exit_code(self) -> int:
        """The contract's exit code for a one-shot pass, stops aside (the caller turns a stopped
        pass without failures into 143/130)."""
        if self.auth_error is not None:
            return EXIT_AUTH
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def as_run_record(self) -> RunRecord:
        """What the state keeps of this pass."""
        return RunRecord(
            started_at=self.started_at,
            finished_at=self.finished_at,
            ok=self.ok,
            archived=self.archived,
            skipped=self.skipped,
            failed=[failure.as_dict() for failure in self.failed],
            bytes=self.bytes,
        )

    def one_line(self) -> str:
        """The end-of-pass summary line."""
        pruned = f", pruned {self.pruned}" if self.pruned else ""
        filled = f", filled in {self.filled} from other destinations" if self.filled else ""
        stopped = "; stopped: the rest is left for the next pass" if self.stopped else ""
        return (
            f"archived {self.archived}, already had {self.already}, skipped {self.skipped}, "
            f"failed {len(self.failed)}{pruned}{filled}, {human_bytes(self.bytes)} in "
            f"{self.seconds:.1f}s{stopped}"
        )
