"""What every command shares: user errors as one line and exit code 2, atomic writes.

A `UserError` is something the user can fix (a path, a file, a flag); `run_main`
prints it as a single line and exits 2. Anything else is a bug and still raises.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one `UserError` line instead of usage text."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def run_main(main, argv=None):
    """Runs `main(argv)`; a UserError becomes one line on stderr and exit code 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # The temporary name starts with ".partial-" (no glob for finished files matches
    # it) and ends with the real name, so extension-sensitive writers still work.
    fd, tmp = tempfile.mkstemp(
        prefix=".partial-", suffix=f"-{os.path.basename(path)}", dir=directory
    )
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up log lines (CUDA probing) swallowed:
    they ignore TF_CPP_MIN_LOG_LEVEL and would break one-line error reports. If the
    import fails, the captured lines are replayed."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
