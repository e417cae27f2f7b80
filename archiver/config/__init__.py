"""The settings: TOML in, frozen and validated settings out."""
