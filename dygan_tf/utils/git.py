"""The git commit of the code that runs: what run.json, the model card and the
experiments' records name (None outside a git checkout, e.g. an installed wheel)."""

import os
import subprocess


def git_commit_of():
    """(commit, dirty) of the checkout this package runs from, or (None, None); dirty:
    tracked files differ from the commit."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit or None, bool(status)


def commit_line(commit, dirty=None):
    """How a record names its commit: the hash (with "plus uncommitted changes"), or
    "not a git checkout"."""
    if not commit:
        return "not a git checkout"
    return commit + (" plus uncommitted changes" if dirty else "")
