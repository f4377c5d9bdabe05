"""Atomic writes: a killed process or a failed write leaves the old file or the new
one, never half of one. Write to a temporary name beside the target, then rename."""

import contextlib
import json
import os
import tempfile

# Temporary names start with this (no glob for finished files matches it).
PARTIAL_PREFIX = ".partial-"


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it onto `path` only on success."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # The temporary name ends with the real name, so extension-sensitive writers work.
    fd, tmp = tempfile.mkstemp(
        prefix=PARTIAL_PREFIX, suffix=f"-{os.path.basename(path)}", dir=directory
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
