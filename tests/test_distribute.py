"""Distribution and precision: mirrored on 2 logical CPUs, two workers on localhost,
resume after killing a worker, mixed precision. (Mirrored vs one device weight equality
is in test_model.py; the XLA-compiled train steps of DyGAN and pix2pix, in bfloat16, are
run by test_benchmarks_run.py's GPU-mode test.)"""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf import fit
from dygan_tf.config.run_config import get_preset
from dygan_tf.models.builders import build_dygan
from dygan_tf.run_folder import checkpoints
from dygan_tf.run_folder import files as run_files
from dygan_tf.training.distribute import make_strategy
from dygan_tf.training.run import open_run
from tests.helpers import FIT_RUNS, FIT_STEPS, PATCH_D, REPO, run_in_process, t2_task_batch

TINY = get_preset("tiny").override(discriminator="patch")  # helpers.PATCH_D
SIZE = TINY.model.image_size
LOSS_LINE = "d_loss:"
EPOCHS = 3  # of the two-worker run: killed after epoch 1, then resumed


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(ports, data, out, epochs, log_dir, tag):
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)):
        scratch = os.path.join(log_dir, f"tmp-{tag}")  # a non-chief's scratch folder goes here
        os.makedirs(scratch, exist_ok=True)
        env = dict(
            os.environ,
            PYTHONPATH=REPO,
            TMPDIR=scratch,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        )
        log = open(os.path.join(log_dir, f"{tag}-worker{index}.log"), "w")
        procs.append(
            (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "dygan_tf.fit",
                        "--data",
                        str(data),
                        "--out",
                        str(out),
                        "--preset",
                        "tiny",
                        "--epochs",
                        str(epochs),
                        "--steps-per-epoch",
                        "2",
                        "--strategy",
                        "multiworker",
                        *PATCH_D,
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    return procs


def _finish(procs, timeout=420):
    codes = []
    for proc, log in procs:
        codes.append(proc.wait(timeout=timeout))
        log.close()
    return codes


def _loss_lines(path):
    with open(path) as f:
        return [line.strip() for line in f if LOSS_LINE in line and line.startswith("epoch")]


def _history_epochs(run):
    with open(os.path.join(run, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_fit_mirrored_on_two_cpu_replicas(fit_runs):
    # One of the shared fit runs (conftest.FIT_RUNS) trains with --strategy mirrored
    # --cpu-replicas 2, on the two logical CPUs conftest made.
    run = fit_runs["patch_down"]
    assert "--strategy" in FIT_RUNS["patch_down"][0]
    assert "on 2 replica(s)" in run.stdout and "of 2 slice(s)" in run.stdout
    assert _history_epochs(run.path) == [1]
    model = keras.models.load_model(os.path.join(run.path, "generator.keras"))
    assert model.output_shape == (None, 64, 64, 1)


@pytest.mark.slow
def test_a_mirrored_runs_checkpoint_restores_into_every_replica(fit_runs, tfrecord_dir, tmp_path):
    # The checkpoint a 2-replica mirrored run wrote (once, from the replicas' common
    # values) restores under MirroredStrategy into each replica's copy of every variable.
    run = shutil.copytree(fit_runs["patch_down"].path, tmp_path / "run")
    stored = checkpoints.read(checkpoints.latest(run_files.checkpoint_dir(run)))
    strategy = make_strategy("mirrored", cpu_replicas=2)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        state = open_run(
            run_files.read_config(str(run)), str(tfrecord_dir), str(run), strategy, FIT_STEPS
        )
    assert state.start == 1 and "resuming at epoch 2" in printed.getvalue()
    assert stored["epoch"] == 1 and state.last and state.best
    for name in ("generator", "discriminator", "g_optimizer", "d_optimizer"):
        for variable in getattr(state.gan, name).variables:
            copies = strategy.experimental_local_results(variable.value)
            assert len(copies) == 2, variable.path
            for copy in copies:
                np.testing.assert_array_equal(copy.numpy(), stored[name][variable.path])


@pytest.mark.slow
def test_two_workers_on_localhost_train_identically_and_resume_after_a_kill(tfrecord_dir, tmp_path):
    # Kill both workers once epoch 1 is checkpointed, then restart them: they resume and
    # finish; every epoch's all-reduced losses are the same on both workers.
    out = tmp_path / "run"
    procs = _start_workers(_free_ports(2), tfrecord_dir, out, EPOCHS, tmp_path, "killed")
    last = run_files.checkpoint_dir(out)
    deadline = time.time() + 300
    while time.time() < deadline and not checkpoints.latest(last):
        if any(proc.poll() is not None for proc, _ in procs):
            break
        time.sleep(0.1)
    log = (tmp_path / "killed-worker0.log").read_text()[-3000:]
    assert checkpoints.latest(last), log
    procs[1][0].send_signal(signal.SIGKILL)
    procs[0][0].send_signal(signal.SIGKILL)  # the chief alone would wait for its peer
    _finish(procs)
    finished = max(checkpoints.checkpoints_in(last))
    assert 1 <= finished < EPOCHS
    assert _history_epochs(out)[:finished] == list(range(1, finished + 1))
    chief, other = (_loss_lines(tmp_path / f"killed-worker{i}.log") for i in (0, 1))
    assert len(chief) >= finished and chief[:finished] == other[:finished]

    procs = _start_workers(_free_ports(2), tfrecord_dir, out, EPOCHS, tmp_path, "resumed")
    assert _finish(procs) == [0, 0], open(tmp_path / "resumed-worker0.log").read()[-3000:]
    for i in (0, 1):
        assert (
            f"resuming at epoch {finished + 1}" in open(tmp_path / f"resumed-worker{i}.log").read()
        )
    chief, other = (_loss_lines(tmp_path / f"resumed-worker{i}.log") for i in (0, 1))
    assert len(chief) == EPOCHS - finished and chief == other  # the same all-reduced losses
    assert [int(line.split(":")[0].split()[1]) for line in chief] == list(
        range(finished + 1, EPOCHS + 1)
    )
    assert _history_epochs(out) == list(range(1, EPOCHS + 1))
    model = keras.models.load_model(out / "generator.keras")
    assert np.isfinite(
        model({"image": t2_task_batch(1, SIZE)[0], "task": t2_task_batch(1, SIZE)[2]}).numpy()
    ).all()
    assert not [p for p in os.listdir(out) if p.startswith("dygan-worker")]
    # A non-chief's scratch folder lives under its TMPDIR: the killed one's is still
    # there, the resumed one's is gone at the end. Only the chief writes checkpoints.
    scratch = [p for p in (tmp_path / "tmp-killed").iterdir() if p.name.startswith("dygan-worker")]
    assert scratch and not [p for s in scratch for p in s.rglob("ckpt-*")]
    assert not [p for p in os.listdir(tmp_path / "tmp-resumed") if p.startswith("dygan-worker")]
    assert sorted(checkpoints.checkpoints_in(last)) == [EPOCHS - 1, EPOCHS]


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_outputs(precision):
    keras.utils.set_random_seed(0)
    gan = build_dygan(TINY.override(mixed_precision=precision))
    assert gan.generator.get_layer("up0_1_conv").compute_dtype == precision
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    if precision == "float16":
        assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
        assert isinstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)
    data = tf.data.Dataset.from_tensor_slices(t2_task_batch(2, SIZE)).batch(3)
    history = gan.fit(data, epochs=1, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values())
    out = gan({"image": t2_task_batch(1, SIZE)[0], "task": t2_task_batch(1, SIZE)[2]})
    assert out.dtype == tf.float32 and np.isfinite(out.numpy()).all()


def test_bad_distribution_flags_are_one_line(tfrecord_dir, tmp_path):
    env_free = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dygan_tf.fit",
            "--data",
            str(tfrecord_dir),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "tiny",
            "--strategy",
            "multiworker",
        ],
        cwd=REPO,
        env=dict(env_free, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TF_CONFIG" in errors[0] and "Traceback" not in result.stderr
    result = run_in_process(  # the same command, without another TensorFlow start-up
        fit.main,
        "--data",
        tfrecord_dir,
        "--out",
        tmp_path / "r",
        "--preset",
        "tiny",
        "--mixed-precision",
        "float8",
    )
    assert result.returncode == 2 and "--mixed-precision" in result.stderr
