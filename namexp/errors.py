"""The one exception type for mistakes a user can fix.

Everything that a user can get wrong (a typo in a config, a missing dataset, a bad checkpoint) raises
`UserError` with a one-line message that names the problem and the way out. The CLI prints that line
and exits with code 2, without a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, with a message that says how to fix it."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))
