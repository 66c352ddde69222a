"""A run's home: the run folder's layout, its claim and lease, the run state, checkpoints, the record, and loading
a run's config and model back. Only this package knows where things live in a run folder (docs/run-folder.md).

Kept free of torch at import time: `namexp --help` and `compare` import pieces of it.
"""
