"""The transfer path: a backup's files from fresh URLs, streamed, hashed, joined into one upload."""
