"""The run-folder lock: one live writer, refusals that name the holder, stale takeover.

The holder and the contender are real processes (`python -m research.lock FOLDER`).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dygan_tf.run_folder import lock as lock_lib
from tests.helpers import REPO, one_error_line, run_cli, run_cli_reporting_tensorflow


def _start_holder(folder):
    proc = subprocess.Popen(
        [sys.executable, "-m", "research.lock", str(folder), "60"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_refused_then_takes_over_after_kill(tmp_path):
    folder = tmp_path / "run"
    holder = _start_holder(folder)
    try:
        line = one_error_line(run_cli("research.lock", folder, "0", timeout=60))
        assert str(folder) in line and f"pid {holder.pid}" in line, line
        assert json.loads((folder / lock_lib.LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The holder died without releasing: the next process takes over with a note.
    result = run_cli("research.lock", folder, "0", timeout=60)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and notes[0].startswith("note: "), result.stderr
    assert f"pid {holder.pid} is gone" in notes[0] and str(folder) in notes[0]
    assert not (folder / lock_lib.LOCK_FILE).exists()  # released at exit


def test_clean_exit_releases(tmp_path):
    folder = tmp_path / "run"
    with lock_lib.hold(folder) as held:
        assert held.held()
        with pytest.raises(lock_lib.FolderInUse, match=f"pid {os.getpid()}"):
            lock_lib.RunFolderLock(folder).acquire()  # same host, live pid: refused
    assert not (folder / lock_lib.LOCK_FILE).exists()
    with lock_lib.hold(folder):  # and free again
        pass


def _foreign_lock(folder, age_s):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock_lib.LOCK_FILE
    info = {"pid": 1, "host": "other-" + socket.gethostname(), "token": "x", "started": 0}
    path.write_text(json.dumps(info))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_other_hosts_lock_is_stale_only_after_the_timeout(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DYGAN_LOCK_STALE_S", "120")
    path = _foreign_lock(tmp_path / "run", age_s=30)
    with pytest.raises(lock_lib.FolderInUse, match="on other-"):
        lock_lib.RunFolderLock(tmp_path / "run").acquire()
    assert json.loads(path.read_text())["host"].startswith("other-")  # untouched

    _foreign_lock(tmp_path / "run", age_s=300)
    with lock_lib.hold(tmp_path / "run") as held:
        assert held.held()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not touched for 300 s (> 120 s)" in err[0], err


def test_release_never_removes_another_process_lock(tmp_path):
    folder = tmp_path / "run"
    mine = lock_lib.RunFolderLock(folder).acquire()
    # Someone removed our lock by hand and another process took the folder.
    os.remove(mine.path)
    other = lock_lib.RunFolderLock(folder).acquire()
    mine.release()
    assert other.held()
    other.release()
    assert not os.path.exists(other.path)


def test_heartbeat_touches_the_lock(tmp_path):
    held = lock_lib.RunFolderLock(tmp_path / "run", heartbeat_s=0.05).acquire()
    try:
        then = time.time() - 1000
        os.utime(held.path, (then, then))
        time.sleep(0.3)
        assert time.time() - os.stat(held.path).st_mtime < 100
    finally:
        held.release()


def test_unreadable_lock_taken_over_after_grace(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / lock_lib.LOCK_FILE
    path.write_text("{half")
    then = time.time() - 60
    os.utime(path, (then, then))
    with lock_lib.hold(folder):
        pass
    assert "unreadable lock file" in capsys.readouterr().err


def test_a_folder_the_lock_created_goes_again_if_nothing_was_written(tmp_path):
    created = tmp_path / "new"
    with lock_lib.hold(created):
        assert created.is_dir()
    assert not created.exists()  # a command that failed early leaves no empty run folder
    with lock_lib.hold(created):
        (created / "history.csv").write_text("epoch\n")
    assert sorted(os.listdir(created)) == ["history.csv"]  # written files stay
    existing = tmp_path / "existing"
    existing.mkdir()
    with lock_lib.hold(existing):
        pass
    assert existing.is_dir() and not os.listdir(existing)  # not ours to remove


@pytest.mark.parametrize(
    "module, extra",
    [
        ("dygan_tf.fit", ["--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "1"]),
        ("tuning.search_lambda", ["--preset", "tiny", "--values", "1", "--epochs", "1"]),
    ],
)
def test_fit_and_lambda_search_refuse_a_live_folder(tfrecord_dir, tmp_path, module, extra):
    folder = tmp_path / "run"
    holder = _start_holder(folder)
    try:
        before = sorted(os.listdir(folder))
        result, imported = run_cli_reporting_tensorflow(
            module, "--data", tfrecord_dir, "--out", folder, *extra
        )
        line = one_error_line(result)
        assert str(folder) in line and f"pid {holder.pid}" in line, line
        assert not imported  # refused before TensorFlow starts
        assert sorted(os.listdir(folder)) == before  # nothing written next to the holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
