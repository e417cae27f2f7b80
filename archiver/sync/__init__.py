"""One pass: plan, transfer, commit, report; the runtime it runs in and its progress display."""
