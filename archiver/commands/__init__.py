"""Every subcommand but a pass: status, check-config, prune, verify, import, backup-task, demo."""
