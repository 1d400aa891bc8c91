"""The one exception type for mistakes a user can make (paths, configs, data, checkpoints).

Entry scripts catch it and print its message as a single line on stderr, exit non-zero.
"""


class UserError(Exception):
    """A problem with the user's input; the message alone must say what to fix."""
