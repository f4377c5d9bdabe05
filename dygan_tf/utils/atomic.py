"""Atomic writes: a killed process or a failed write leaves the old file or the new
one, never half of one. Write to a temporary name beside the target, then rename.

Finished files get the modes any other tool's would: 0666 less the user's umask
(`tempfile.mkstemp` makes its file 0600, which the rename would otherwise keep).

A write that fails (a full disk, a file-size limit, no permission) raises `WriteError`:
one line naming the target, and still an `OSError` for callers that clean up on one.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile

from dygan_tf.utils.errors import UserError

# Temporary names start with this (no glob for finished files matches it).
PARTIAL_PREFIX = ".partial-"


class WriteError(UserError, OSError):
    """`path: cannot write (reason); hint`: a UserError line that is also an OSError."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def current_umask():
    """The process's umask, read without changing it where Linux shows it (a thread
    creating a file meanwhile would otherwise get the wrong mode)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_failure(error):
    """Why a write failed, in a few words ("File too large"), from an OSError or a
    TensorFlow OpError (whose message ends "...; File too large [Op:SaveV2]")."""
    reason = getattr(error, "strerror", None)
    if not reason:
        text = (getattr(error, "message", None) or str(error)).strip()
        reason = text.splitlines()[-1].split("; ")[-1] if text else ""
        reason = re.sub(r"\s*\[Op:\w+\].*$", "", reason).strip()
    return reason or type(error).__name__


def write_error(path, error, hint=None):
    """The `WriteError` for `error` (OSError or OpError) while writing `path`."""
    reason = write_failure(error)
    message = f"{os.fspath(path)}: cannot write ({reason})" + (f"; {hint}" if hint else "")
    e = WriteError(message)
    e.errno, e.strerror, e.filename = getattr(error, "errno", None), reason, os.fspath(path)
    return e


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success.

    An OSError while writing or renaming becomes a `WriteError` naming `path` (the
    previous file, if any, is left as it was)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        # The temporary name ends with the real name, so extension-sensitive writers work.
        fd, tmp = tempfile.mkstemp(
            prefix=PARTIAL_PREFIX, suffix=f"-{os.path.basename(path)}", dir=directory
        )
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        hint = "the previous file is kept" if os.path.exists(path) else "nothing was written"
        raise write_error(path, e, hint) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def publish_folder(staging, out, replace=False):
    """Renames the finished folder `staging` onto `out`, the folder counterpart of
    `atomic_path`: `out` appears whole or not at all. An existing `out` must be empty,
    unless `replace` (then it and all it holds are removed first)."""
    if replace:
        shutil.rmtree(out, ignore_errors=True)
    elif os.path.isdir(out):
        os.rmdir(out)
    os.replace(staging, out)
