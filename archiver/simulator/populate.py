"""The demo data set: ``c66-archiver demo`` and ``python -m archiver.simulator --demo`` serve it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from archiver.simulator.account import Account


def populate_demo(sim: Account) -> None:
    """Three stacks with mysql, postgresql, redis and mongodb backups, one multi-part
    backup (2.5 parts of the simulator's part_size) and one failed backup."""
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    sim.add_stack("demo-shop-prod", "Shop", "production")
    sim.add_stack("demo-api-staging", "API", "staging")
    sim.add_stack("demo-analytics", "Analytics", "production")
    plan: list[tuple[str, str, str, int, int]] = [
        ("demo-shop-prod", "mysql", "shop", 300_000, 0),
        ("demo-shop-prod", "mysql", "shop", 320_000, 0),
        ("demo-shop-prod", "redis", "cache", 64_000, 0),
        ("demo-api-staging", "postgresql", "api", 500_000, 0),
        ("demo-api-staging", "postgresql", "api", 0, 1),  # failed: must be skipped
        ("demo-analytics", "mongodb", "events", 200_000, 0),
        ("demo-analytics", "mongodb", "events", sim.part_size * 5 // 2, 0),  # multi-part
    ]
    for n, (stack, db_type, name, size, status) in enumerate(plan):
        sim.add_backup(
            stack,
            db_type=db_type,
            database_name=name,
            size=max(size, 1),
            status=status,
            backup_date=day + timedelta(hours=6 * n),
        )
