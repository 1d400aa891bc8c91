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
    except Exception as err:
        # A full disk in a write that no wrapper named (a library's own file, say) is still one line.
        from .files import disk_full_message, exception_chain, is_disk_full

        if not is_disk_full(err):
            raise
        names = [e.filename for e in exception_chain(err) if isinstance(e, OSError) and e.filename]
        print(f"{prog}: error: " + (disk_full_message(names[0]) if names else
                                    "no space left on device (disk full or quota exceeded): free some space and "
                                    "run the same command again"), file=sys.stderr)
        sys.exit(2)
