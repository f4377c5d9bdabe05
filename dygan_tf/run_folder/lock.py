"""One writer per run folder: a lock file that names its holder, with stale-lock takeover.

Taken by `fit` (and by the checkout's diagnostic `python -m research.lock FOLDER`,
which holds a folder's lock for the tests).
"""

import json
import os
import socket
import sys
import threading
import time
import uuid

from dygan_tf.utils.errors import UserError

LOCK_FILE = "lock.json"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 600.0
UNREADABLE_GRACE_S = 5.0  # a lock file being written by its creator right now


class FolderInUse(UserError):
    """Another live process holds the run folder's lock."""


def stale_after_s():
    """Seconds after which another host's untouched lock is stale (env override)."""
    value = os.environ.get("DYGAN_LOCK_STALE_S")
    try:
        return float(value) if value else STALE_AFTER_S
    except ValueError:
        return STALE_AFTER_S


def pid_alive(pid):
    """Whether a process with this pid exists on this host (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie (dead, not yet reaped by its parent) holds nothing
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_lock(path):
    """The lock file's dict, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _age_s(path):
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0


def describe(info):
    """'pid 123 on host-a (started 2024-05-01 10:00:00, python -m dygan_tf.fit ...)'."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (
        f"pid {info.get('pid')} on {info.get('host')} "
        f"(started {started}, {info.get('command') or 'unknown command'})"
    )


def stale_reason(path, info, host=None):
    """Why the lock at `path` (holding `info`, or None) is stale, or None if it is live."""
    host = host or socket.gethostname()
    age = _age_s(path)
    if info is None:
        return f"unreadable lock file {age:.0f} s old" if age > UNREADABLE_GRACE_S else None
    if info.get("host") == host:
        pid = info.get("pid")
        if not isinstance(pid, int) or not pid_alive(pid):
            return f"pid {pid} is gone"
        return None
    limit = stale_after_s()
    if age > limit:
        return f"not touched for {age:.0f} s (> {limit:.0f} s) on another host"
    return None


class RunFolderLock:
    """The lock of one run folder; `acquire()` / `release()` or a `with` block."""

    def __init__(self, folder, command=None, heartbeat_s=HEARTBEAT_S):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_FILE)
        self.command = command if command is not None else " ".join(sys.argv)[:200]
        self.heartbeat_s = heartbeat_s
        self.info = None
        self._created = False
        self._stop = threading.Event()
        self._thread = None

    def acquire(self):
        """Takes the lock (taking over a stale one); FolderInUse if a live process has it."""
        self._created = not os.path.isdir(self.folder)
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise UserError(f"{self.folder}: cannot create it ({e.strerror or e})") from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "token": uuid.uuid4().hex,
            "started": time.time(),
            "command": self.command,
        }
        for _ in range(5):
            if self._create(info):
                self.info = info
                self._start_heartbeat()
                return self
            held = read_lock(self.path)
            reason = stale_reason(self.path, held)
            if reason is None:
                if held is None:  # being written this instant: look again shortly
                    time.sleep(0.2)
                    continue
                raise FolderInUse(
                    f"{self.folder}: in use by {describe(held)}; wait for it to finish, "
                    f"or remove {self.path} if that process is gone"
                )
            if self._set_aside(held):
                who = describe(held) if held else "an unknown process"
                print(
                    f"note: {self.folder}: taking over the lock of {who}: {reason}",
                    file=sys.stderr,
                )
        raise FolderInUse(f"{self.folder}: could not take {self.path}; other processes race for it")

    def _create(self, info):
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            os.remove(self.path)
            raise UserError(f"{self.path}: cannot write the lock ({e.strerror})") from None
        return True

    def _set_aside(self, held):
        """Removes the stale lock `held`, unless another process replaced it meanwhile:
        it is renamed aside first (one renamer wins) and put back if it is not `held`."""
        aside = f"{self.path}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else set it aside; try to create again
        if read_lock(aside) != held:  # a fresh lock, taken just now: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def _start_heartbeat(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="run-folder-lock", daemon=True)
        self._thread.start()

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            if self.held():
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def held(self):
        """Whether the lock file on disk is still ours."""
        if self.info is None:
            return False
        info = read_lock(self.path)
        return info is not None and info.get("token") == self.info["token"]

    def release(self):
        """Removes the lock file if it is still ours (never another process's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.held():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            if self._created:  # a command that failed before writing leaves no folder
                try:
                    os.rmdir(self.folder)
                except OSError:  # not empty (or gone): the run's files stay
                    pass
        self.info = None

    def __enter__(self):
        return self if self.info is not None else self.acquire()  # acquired already: keep

    def __exit__(self, *exc):
        self.release()
        return False


def hold(folder, command=None):
    """A `with` block holding `folder`'s lock: `with hold(run_dir): ...`."""
    return RunFolderLock(folder, command)
