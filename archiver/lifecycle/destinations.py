"""The state made to match the configured destinations before anything reads it.

- Rows from before destinations had names go to the destination they came from:
  the only one configured, else the one named "default", else the one whose
  location matches where they were. Nothing is downloaded or read again for them.
- A destination the state has not read yet (a new state, a new or renamed
  destination), or whose place changed since it was read (`config.storage.place_of`:
  another path, bucket, server or type under the same name), is read whole: its
  manifests and tombstones become the state's copies and prunes there, and what the
  state said of it before is forgotten (`archiver.lifecycle.rebuild`). An archive
  moved with its files so reads back the same copies, nothing downloaded; a new,
  empty place holds nothing, and the next pass fills it in from the others.
- A writer (a pass, prune) forgets the rows of destinations no longer
  configured; the storage still holds the truth, read again if one comes back.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from archiver.config.destinations import StorageSettings
from archiver.config.storage import place_of
from archiver.core.errors import StorageError
from archiver.core.secrets import redact
from archiver.lifecycle.rebuild import rebuild_from_storage
from archiver.model.manifest import utc_now_iso
from archiver.state.destinations import LEGACY
from archiver.state.store import StateStore
from archiver.storage import location_of
from archiver.storage.destinations import Destination

log = structlog.get_logger(__name__)


def adopt_legacy_rows(state: StateStore, destinations: Sequence[StorageSettings]) -> None:
    """Hand the rows from before names to the destination they belong to (see above)."""
    records = state.destinations
    if LEGACY not in records.known():
        return
    owner = _legacy_owner(state, destinations)
    if owner is None:
        log.warning("the state's records from before several destinations match none of "
                    "them: every destination is read afresh instead")
        records.forget(LEGACY)
        return
    records.rename(LEGACY, owner, utc_now_iso())
    log.info("state records handed to destination", storage=owner)


def _legacy_owner(state: StateStore, destinations: Sequence[StorageSettings]) -> str | None:
    if len(destinations) == 1:
        return destinations[0].name
    named_default = [d.name for d in destinations if d.name == "default"]
    if named_default:
        return named_default[0]
    sample = state.destinations.legacy_sample()
    if sample is None:
        return None
    location, tar_key = sample
    matching = [d.name for d in destinations if location_of(d, tar_key) == location]
    return matching[0] if len(matching) == 1 else None


async def reconcile(
    state: StateStore, destinations: Sequence[Destination], *, writer: bool
) -> dict[str, str]:
    """Adopt old rows, forget unconfigured destinations (writers), read unread or moved ones.

    Returns, per destination that could not be read, why: it is left unread (to be
    read at the next open) and a pass skips it.
    """
    adopt_legacy_rows(state, [destination.settings for destination in destinations])
    configured = {destination.name for destination in destinations}
    if writer:
        for stale in sorted(state.destinations.known() - configured):
            log.info("forgetting a destination no longer configured", storage=stale)
            state.destinations.forget(stale)
    problems: dict[str, str] = {}
    known_places = state.destinations.places()
    for destination in destinations:
        place = place_of(destination.settings)
        if destination.name in known_places and known_places[destination.name] in (None, place):
            if known_places[destination.name] is None:  # read before places were remembered
                state.destinations.note_place(destination.name, place)
            continue
        if destination.name in known_places:
            log.info("destination moved since the state read it: reading it where it is now",
                     storage=destination.name, location=destination.location(""))
        try:
            await rebuild_from_storage(state, destination.storage, destination.name, place)
        except (StorageError, OSError) as error:
            problems[destination.name] = redact(str(error))
            log.error("could not read destination", storage=destination.name,
                      error=problems[destination.name])
    return problems
