"""The watch over Cloud 66: missed, late, failed and shrunken backups, from the lists a pass reads.

`reading` is what a pass hands over (a stack's list, and whether it was read
whole); `rules` are the contract's rules as pure functions; `judge` applies
them to one stack against the state (`archiver.state`: seen backups, series,
findings and their outbox); `messages` words a finding for people and machines.
Telling the channels is the service's job (`archiver.service.telling`).
"""
