"""What is archived, pruned, under way and when: the crash-safe state and its lock."""
