"""One writer per run folder: a lock file that names its holder, with stale-lock takeover.

    with lock.hold(run_dir):        # UserError naming the folder and the holder if busy
        train(...)

The lock is `run_dir/lock.json` = {pid, host, token, started, command}, created with
O_EXCL (atomic on local disks and on NFSv3+). While held, a thread touches it every
HEARTBEAT_S seconds. A lock is stale, and taken over with a one-line note on stderr,
when its holder is on this host and its pid is gone, or it is on another host (whose
pids we cannot see) and has not been touched for STALE_AFTER_S seconds (default 10
minutes; `DYGAN_LOCK_STALE_S` overrides it). An unreadable lock file (a holder killed
between create and write) counts as stale once it is older than a few seconds.
A folder the lock created is removed again at release if nothing was written into it
(a command that failed early leaves no empty run folder behind).
"""

import time

from dygan_tf.run_folder.lock import hold


def main(argv=None):
    """Test helper and diagnostic: `python -m research.lock FOLDER [SECONDS]` holds the
    lock for SECONDS (default: until killed) after printing 'locked'."""
    from dygan_tf.utils.cli import ArgumentParser

    parser = ArgumentParser(prog="research.lock", description="hold a run folder's lock")
    parser.add_argument("folder")
    parser.add_argument("seconds", type=float, nargs="?", default=None)
    args = parser.parse_args(argv)
    with hold(args.folder):
        print("locked", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1)


if __name__ == "__main__":
    from dygan_tf.utils.cli import run_main

    run_main(main)
