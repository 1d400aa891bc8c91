"""The one exception type for mistakes a user can make (paths, configs, data, checkpoints).

Entry scripts catch it and print its message as a single line on stderr, exit non-zero.
"""


class UserError(Exception):
    """A problem with the user's input; the message alone must say what to fix."""


def run_cli(main, prog: str) -> None:
    """Run an entry script's main(): a UserError becomes one line on stderr and exit 2."""
    import sys

    try:
        sys.exit(main())
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
