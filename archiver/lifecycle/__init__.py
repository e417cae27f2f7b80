"""The archive's lifecycle once a backup is in: prune, verify, restore, rebuild, import staging."""
