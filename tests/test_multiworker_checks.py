"""Two workers on the loopback address: a problem that one worker finds stops every
worker with the same one `error:` line and exit 2, before any collective op of
training (no aborted-collective traceback on a peer). The line is built from the
reports the workers exchanged, so it is tested here without a cluster as well."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dygan_tf.training import distribute
from tests.helpers import PATCH_D, REPO

RELEASE_SHARDS = os.path.join(REPO, "tests", "data", "release_0_1_0", "shards")  # 1 per split
NATIVE = ("WARNING: All log messages before absl", "I0000", "W0000", "E0000")


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(tmp_path, data, extra=((), ()), epochs=1, stdout=subprocess.PIPE):
    """`fit --strategy multiworker` started as worker 0 and 1 of a loopback cluster."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = []
    for index in (0, 1):
        env = dict(
            os.environ,
            PYTHONPATH=REPO,
            TMPDIR=str(tmp_path),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        argv = ["--data", data, "--out", tmp_path / "run", "--preset", "tiny", "--epochs", epochs]
        argv += ["--steps-per-epoch", 1, "--strategy", "multiworker", *PATCH_D, *extra[index]]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dygan_tf.fit", *map(str, argv)],
                cwd=REPO,
                env=env,
                stdout=stdout if stdout is subprocess.PIPE else stdout[index],
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _two_workers(tmp_path, data, extra=((), ())):
    """Runs both workers to the end; returns [(exit code, stderr lines without
    TensorFlow's native log, stdout + stderr), ...]."""
    procs = _start(tmp_path, data, extra)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        lines = [line for line in err.splitlines() if not line.startswith(NATIVE)]
        results.append((proc.returncode, lines, out + err))
    return results


def _assert_same_error_everywhere(results, *needles):
    (code0, lines0, text0), (code1, lines1, text1) = results
    for code, lines, text in results:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text[-3000:]
        assert "Traceback" not in text and "Collective ops is aborted" not in text, text[-3000:]
    assert lines0 == lines1, (lines0, lines1)
    for needle in needles:
        assert needle in lines0[0], lines0[0]
    return lines0[0]


@pytest.mark.slow
def test_too_few_train_shards_stop_both_workers_with_one_line(tmp_path):
    # The 32 px shards of release 0.1.0 hold one train shard: worker 1 would get none.
    results = _two_workers(tmp_path, RELEASE_SHARDS, (("--image-size", 32),) * 2)
    _assert_same_error_everywhere(
        results, RELEASE_SHARDS, "split 'train' has 1 shard(s) for 2 workers"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_workers_with_other_settings_stop_with_one_line(tfrecord_dir, tmp_path):
    results = _two_workers(tmp_path, tfrecord_dir, ((), ("--lambda-l1", 50)))
    _assert_same_error_everywhere(
        results, "worker 1 and worker 0 differ in the run's settings", "same data and settings"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_chief_whose_run_folder_is_in_use_stops_both_workers_with_one_line(
    tfrecord_dir, tmp_path
):
    # The lock is the command's own check, taken before the workers' exchange: it must
    # still reach the peer through it, not as a chief that left without a word.
    holder = subprocess.Popen(
        [sys.executable, "-m", "research.lock", str(tmp_path / "run"), "120"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        results = _two_workers(tmp_path, tfrecord_dir)
    finally:
        holder.kill()
        holder.wait()
    _assert_same_error_everywhere(results, "--out", str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def _report(problem=None, **digests):
    base = {key: bytes(32) for key in distribute.DIGESTS}
    return problem, {**base, **{k: v.encode().ljust(32, b"\0") for k, v in digests.items()}}


def test_the_error_line_depends_on_the_exchanged_reports_alone():
    agreed = distribute.agreed_error
    assert agreed({"worker 0": _report(), "worker 1": _report()}) is None
    same = "data: split 'train' has 1 shard(s) for 2 workers"
    assert agreed({"worker 0": _report(same), "worker 1": _report(same)}) == same
    assert agreed({"worker 0": _report(), "worker 1": _report("x: bad")}) == "x: bad (on worker 1)"
    assert (
        agreed({"chief": _report("a"), "worker 0": _report("b"), "worker 1": _report()})
        == "a (on chief; 1 other worker(s) failed too)"
    )
    line = agreed({"worker 0": _report(), "worker 1": _report(shards="other")})
    assert line.startswith("worker 1 and worker 0 differ in the shards"), line
    line = agreed({"worker 0": _report(), "worker 1": _report(checkpoints="ckpt-3")})
    assert "--out must be storage every worker reads" in line, line


def test_a_report_survives_the_int32_encoding():
    digests = {key: bytes(range(i, i + 32)) for i, key in enumerate(distribute.DIGESTS)}
    text = "données/x: split 'train' has 1 shard(s)"
    row = distribute._encode(3, text, digests)
    assert row.dtype.name == "int32" and row.ndim == 1
    assert distribute._decode(row) == (3, text, digests)
    assert distribute._decode(distribute._encode(0, None, digests))[1] == ""


@pytest.mark.slow
def test_a_worker_killed_in_training_leaves_its_peer_one_line(tfrecord_dir, tmp_path):
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in (0, 1)]
    procs = _start(tmp_path, tfrecord_dir, epochs=100, stdout=logs)
    deadline = time.time() + 240
    while time.time() < deadline and "epoch 1:" not in (tmp_path / "worker1.log").read_text():
        assert procs[1].poll() is None, procs[1].stderr.read()[-3000:]
        time.sleep(0.2)
    procs[1].kill()  # SIGKILL: no line of its own
    _, err = procs[0].communicate(timeout=240)
    procs[1].communicate(timeout=60)
    for log in logs:
        log.close()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert procs[0].returncode == 2 and "Traceback" not in err, err[-3000:]
    assert len(errors) == 1 and "worker 0: lost contact with another worker in epoch" in errors[0]


def test_each_workers_own_checks_return_a_line_instead_of_raising(tmp_path):
    from dygan_tf.config.run_config import get_preset

    config = get_preset("tiny")  # the checks read the shards, not their image size
    problem = distribute.worker_problem
    assert problem(config, RELEASE_SHARDS, str(tmp_path / "run"), True, 1) is None
    line = problem(config, RELEASE_SHARDS, str(tmp_path / "run"), False, 3)
    assert line.startswith(f"{RELEASE_SHARDS}: split 'train' has 1 shard(s) for 3 workers")
    assert problem(config, str(tmp_path / "nowhere"), str(tmp_path / "run"), False, 1)
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    line = problem(config, RELEASE_SHARDS, str(blocked / "run"), True, 1)
    assert line.startswith(f"{blocked / 'run'}: the chief cannot write the run folder"), line
    # A non-chief never writes the run folder, so it does not check it.
    assert problem(config, RELEASE_SHARDS, str(blocked / "run"), False, 1) is None
