"""The demo data set: ``c66-archiver demo`` and ``python -m archiver.simulator --demo`` serve it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from archiver.simulator.account import Account
from archiver.simulator.cadence import cadence


def populate_demo(sim: Account) -> None:
    """Three stacks with mysql, postgresql, redis and mongodb backups, one multi-part
    backup (2.5 parts of the simulator's part_size), and what the watch finds: a
    nightly series whose newest dump shrank to a third, and a series whose newest
    backup failed in Cloud 66."""
    now = datetime.now(UTC).replace(microsecond=0)
    sim.add_stack("demo-shop-prod", "Shop", "production")
    sim.add_stack("demo-api-staging", "API", "staging")
    sim.add_stack("demo-analytics", "Analytics", "production")
    nights = cadence(_last_night(now), 5, timedelta(days=1))[::-1]
    # Ids in the order of the demo's first version (its docs restore backup 7, events),
    # the shop's last three nights after them.
    sim.add_series("demo-shop-prod", nights[:2], sizes=[300_000, 310_000], database_name="shop")
    sim.add_backup("demo-shop-prod", db_type="redis", database_name="cache", size=64_000,
                   backup_date=now - timedelta(hours=6))
    sim.add_backup("demo-api-staging", db_type="postgresql", database_name="api",
                   size=500_000, backup_date=now - timedelta(days=1))
    sim.add_backup("demo-api-staging", db_type="postgresql", database_name="api", size=1,
                   status=1, backup_date=now - timedelta(hours=2),  # failed: skipped, told
                   result="pg_dump: error: connection to server was lost")
    sim.add_backup("demo-analytics", db_type="mongodb", database_name="events", size=200_000,
                   backup_date=now - timedelta(days=2))
    sim.add_backup("demo-analytics", db_type="mongodb", database_name="events",
                   size=sim.part_size * 5 // 2, backup_date=now - timedelta(days=1))  # multi-part
    # The newest dump is a third of the usual size: the watch calls it a size anomaly.
    sim.add_series(
        "demo-shop-prod", nights[2:], sizes=[305_000, 320_000, 100_000], database_name="shop"
    )


def _last_night(now: datetime) -> datetime:
    """The last 02:00 UTC before `now`: when the demo's nightly backups ran."""
    night = now.replace(hour=2, minute=0, second=0)
    return night if night <= now else night - timedelta(days=1)
