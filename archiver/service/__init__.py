"""The long-running service: daemon, schedule, HTTP, status page, metrics, alerts, systemd."""
