"""The one exception type for mistakes a user can make (paths, configs, data, checkpoints).

Entry scripts catch it and print its message as a single line on stderr, exit non-zero.
"""


class UserError(Exception):
    """A problem with the user's input; the message alone must say what to fix."""


def missing_module_message(err: ModuleNotFoundError) -> str:
    """What to do when a package of requirements.txt cannot be imported: almost always a Python other than
    the project's .venv (the README's commands assume it is active)."""
    import os
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    venv = root / ".venv"
    shown = os.path.relpath(venv) if Path.cwd().resolve() in (root, *root.parents) else str(venv)
    if (venv / "bin" / "python").exists():
        fix = (f"activate the project's environment first: source {shown}/bin/activate "
               f"(or run {shown}/bin/python instead of python)")
    else:
        fix = f"make venv (or make demo / make test) creates {shown} with them; then source {shown}/bin/activate"
    return f"No module named '{err.name}' in this Python ({sys.executable}): {fix}"


def _is_ours(name: str) -> bool:
    return name.split(".")[0] in ("model_code", "train", "eval", "sample", "evaluate", "scripts", "tests")


def exit_for_missing_module(err: ModuleNotFoundError, prog: str) -> None:
    """One line naming the fix and exit 2, for a script whose third-party imports failed; re-raise our own."""
    import sys

    if err.name is None or _is_ours(err.name):
        raise err
    print(f"{prog}: error: {missing_module_message(err)}", file=sys.stderr)
    sys.exit(2)


def run_cli(main, prog: str) -> None:
    """Run an entry script's main(): a UserError becomes one line on stderr and exit 2, and so does a package
    that this Python lacks (the project's .venv not active)."""
    import sys

    try:
        sys.exit(main())
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as err:
        exit_for_missing_module(err, prog)
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
