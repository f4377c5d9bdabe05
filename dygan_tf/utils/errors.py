"""Errors a user can fix, and how a command names the flag they came through.

Library code raises `UserError` (a `ValueError`) whose message starts with the path or
value at fault and says what was expected ("runs/x: no config.json; expected ...").
Commands wrap calls in `for_flag("--run")`, which puts the flag in front, and
`dygan_tf.utils.cli.run_main` prints the result as one `error:` line with exit code 2.
Any other exception is a bug and keeps its traceback.
"""

import contextlib


class UserError(ValueError):
    """A problem with the user's input (a path, a file, a value): one line, exit 2."""


@contextlib.contextmanager
def for_flag(flag):
    """Re-raises a `UserError` from the block with `flag` in front of its message,
    unless the message already names a flag (`--model ...` raised while `--input` is
    read keeps `--model`) or `flag` is None (a Python caller)."""
    try:
        yield
    except UserError as e:
        if flag is None or str(e).startswith("--"):
            raise
        raise type(e)(f"{flag} {e}") from None


def for_flag_of(flags, name):
    """`for_flag` of the flag a command named for the library parameter `name` in
    `flags` ({"out_dir": "--out-dir", ...}), else nothing (a Python caller): how library
    code that opens several of a command's inputs names each one's flag."""
    return for_flag((flags or {}).get(name))
