"""What is archived, pruned, under way and when: the crash-safe state and its lock.

`StateStore` (store.py) opens the database (database.py, schema.py) and holds one
object per job: `archived`, `pruned`, `transfers`, `commits`, `verifications`,
`runs`, `api_requests`, the watch's `seen`, `series`, `findings` and `stack_names`, and
the instance `lock`. The rows they return are in records.py.
"""
