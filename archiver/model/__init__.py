"""What the archive is made of: manifests, where backups live, what to keep, what a pass did."""
