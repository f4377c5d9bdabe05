"""Faults during a run and in its folder: a failed write of a checkpoint, history.csv,
generator.keras or an export is one error line and leaves the previous file as it was
(and the same command run again resumes); an unreadable newest checkpoint is passed
over for the one before it, and with none restorable a run refuses to start over on top
of its history; a shard that goes bad after the up-front check is named.

Full disks are simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored): one
case in a fresh process as a user meets it, the others in this process with the soft
limit lowered for the duration of one call (a TensorFlow start-up is 10+ s).

What is compared after a resume: the history rows and checkpoint files written before
the fault (byte for byte), each epoch once, the optimizer's step count, and the whole
run against one that never stopped (every epoch's batches depend only on the seed and
the epoch, so the losses and final weights are equal bit for bit).
"""

import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from dygan_tf import fit
from dygan_tf.data.manifest import read_manifest
from dygan_tf.run_folder import checkpoints
from dygan_tf.run_folder import files as run_files
from dygan_tf.utils.atomic import PARTIAL_PREFIX
from dygan_tf.utils.errors import UserError
from tests.helpers import PATCH_D, checkpoint_counts, one_error_line, run_limited

EPOCHS, STEPS = 3, 2


def _digests(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _partials(folder):
    return [p for p in folder.rglob("*") if p.name.startswith((PARTIAL_PREFIX, ".partial"))]


def _flags(data, out, epochs=EPOCHS):
    return ["--data", data, "--out", out, "--preset", "tiny", "--epochs", epochs] + [
        "--steps-per-epoch",
        STEPS,
        *PATCH_D,
    ]


@contextlib.contextmanager
def file_size_limit(max_bytes):
    """No file of this process may grow past `max_bytes` inside the block: writes fail
    with EFBIG ("File too large") as on a full disk. Only the soft limit is lowered, so
    it can be raised again."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def run_command(main, *args, max_bytes=None):
    """`main(argv)` through `cli.run_main` in this process, optionally under a file-size
    limit; a CompletedProcess of Python's stdout and stderr (any other exception, a
    traceback, propagates and fails the test)."""
    from dygan_tf.utils.cli import run_main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    limit = file_size_limit(max_bytes) if max_bytes else contextlib.nullcontext()
    code = 0
    with limit, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(main, argv)
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _epochs(run):
    return [int(r["epoch"]) for r in run_files.read_history(run)]


def _iterations(prefix):
    return checkpoint_counts(prefix)[1]


def _last(run):
    return os.path.join(run, "checkpoints", "last")


# ------------------------------------------------------------------ write errors
@pytest.fixture(scope="module")
def faulted_run(tfrecord_dir, tmp_path_factory):
    """Two epochs trained, a third whose checkpoint cannot be written (a fresh
    `python -m dygan_tf.fit` under a file-size limit of half the checkpoint's size; an
    epoch's other files are far smaller), then the same command without the limit.
    Returns what each step left."""
    run = tmp_path_factory.mktemp("faulted") / "run"
    first = run_command(fit.main, *_flags(tfrecord_dir, run, epochs=2))
    assert first.returncode == 0, first.stderr
    saved = _digests(run / "checkpoints")
    history = (run / "history.csv").read_text().splitlines()
    limit = max(p.stat().st_size for p in (run / "checkpoints").rglob("ckpt-*.npz")) // 2
    assert limit > 100_000  # above history.csv and the TensorBoard events of an epoch
    failed = run_limited("dygan_tf.fit", _flags(tfrecord_dir, run), limit)
    after_failure = dict(
        checkpoints=_digests(run / "checkpoints"),
        latest=checkpoints.latest(_last(run)),
        partials=_partials(run),
    )
    resumed = run_command(fit.main, *_flags(tfrecord_dir, run))
    return dict(
        run=run,
        checkpoints=saved,
        history=history,
        failed=failed,
        after_failure=after_failure,
        resumed=resumed,
    )


def test_full_disk_while_saving_a_checkpoint_is_one_line_and_resumes(faulted_run):
    run, failed = faulted_run["run"], faulted_run["failed"]
    line = one_error_line(failed)
    # `best` is saved before `last` when validation improved; either way it is named.
    assert "/checkpoints/" in line and "/ckpt-3: cannot write (File too large)" in line, line
    assert "keeps its previous checkpoint" in line and "[Op:" not in line
    # Epochs 1 and 2 as they were: every checkpoint file, ckpt-2 the newest.
    after = faulted_run["after_failure"]
    assert after["checkpoints"] == faulted_run["checkpoints"]
    assert after["latest"] == os.path.join(_last(run), "ckpt-2") and not after["partials"]

    resumed = faulted_run["resumed"]
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at epoch 3 (2 of 3 finished" in resumed.stdout
    assert "note:" not in resumed.stderr
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[:3] == faulted_run["history"] and _epochs(run) == [1, 2, 3]
    assert _iterations(checkpoints.latest(_last(run))) == EPOCHS * STEPS
    # Two kept in last: the newest and one to fall back on.
    assert sorted(checkpoints.checkpoints_in(_last(run))) == [2, 3]


def test_resumed_run_equals_an_undisturbed_one(faulted_run, tfrecord_dir, tmp_path):
    """The run that lost a checkpoint to a full disk and resumed ends with the same
    numbers as one that never stopped: every epoch's batches depend only on the seed
    and the epoch, not on where the process started."""
    undisturbed = tmp_path / "undisturbed"
    done = run_command(fit.main, *_flags(tfrecord_dir, undisturbed))
    assert done.returncode == 0, done.stderr
    losses = ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss", "val_psnr_mean")
    resumed = run_files.read_history(faulted_run["run"])
    assert [[r[k] for k in losses] for r in resumed] == [
        [r[k] for k in losses] for r in run_files.read_history(undisturbed)
    ]
    a = run_files.load_generator(str(faulted_run["run"] / "generator.keras"))
    b = run_files.load_generator(str(undisturbed / "generator.keras"))
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_full_disk_while_saving_generator_keras_keeps_the_old_one(
    faulted_run, tfrecord_dir, tmp_path
):
    run = tmp_path / "run"
    shutil.copytree(faulted_run["run"], run)
    model = run / "generator.keras"
    before = _digests(run)
    # Every epoch is finished: the command only writes generator.keras.
    limit = model.stat().st_size // 2
    failed = run_command(fit.main, *_flags(tfrecord_dir, run), max_bytes=limit)
    line = one_error_line(failed)
    assert line == f"error: {model}: cannot write (File too large); the previous file is kept"
    assert _digests(run) == before and not _partials(run)

    redone = run_command(fit.main, *_flags(tfrecord_dir, run))
    assert redone.returncode == 0, redone.stderr
    old = run_files.load_generator(str(faulted_run["run"] / "generator.keras"))
    new = run_files.load_generator(str(model))
    for a, b in zip(old.get_weights(), new.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_full_disk_while_writing_history_keeps_the_old_one(tmp_path):
    rows = [{"epoch": i, "d_loss": 0.123456789 * i, "note": "x" * 200} for i in range(1, 11)]
    run_files.write_history(tmp_path, rows[:2])
    before = _digests(tmp_path)
    with file_size_limit(1_000), pytest.raises(UserError) as caught:
        run_files.write_history(tmp_path, rows)
    history = tmp_path / "history.csv"
    assert (
        str(caught.value) == f"{history}: cannot write (File too large); the previous file is kept"
    )
    assert isinstance(caught.value, OSError)  # callers that clean up on OSError still do
    assert _digests(tmp_path) == before and not _partials(tmp_path)
    run_files.write_history(tmp_path, rows)
    assert [int(r["epoch"]) for r in run_files.read_history(tmp_path)] == list(range(1, 11))


def test_full_disk_while_exporting_keeps_the_previous_version(run_dir, savedmodel_dir, tmp_path):
    from dygan_tf import export

    models = tmp_path / "saved_models" / "dygan"
    shutil.copytree(savedmodel_dir, models / "1")  # a previous export, being served
    before = _digests(models)
    failed = run_command(export.main, "--run", run_dir, "--out", models / "2", max_bytes=100_000)
    line = one_error_line(failed)
    assert line.startswith(f"error: {models / '2'}: cannot write (File too large)"), line
    assert "nothing was exported" in line
    assert _digests(models) == before and sorted(os.listdir(models)) == ["1"]

    redone = run_command(export.main, "--run", run_dir, "--out", models / "2")
    assert redone.returncode == 0, redone.stderr
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(-1, 1, (3, 64, 64, 1)), tf.float32)
    task = tf.constant(np.eye(12)[[0, 1, 2]], tf.float32)
    outputs = [
        tf.saved_model.load(str(m)).signatures["serving_default"](image=image, task=task)
        for m in (savedmodel_dir, models / "2")
    ]
    np.testing.assert_array_equal(outputs[0]["synthesized"], outputs[1]["synthesized"])


# --------------------------------------------------------------- checkpoint fall-back
def _break(prefix, how):
    """Damages the checkpoint at `prefix` as storage might."""
    data = f"{prefix}.npz"
    raw = bytearray(open(data, "rb").read())
    if how == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x10
    with open(data, "wb") as f:
        f.write(bytes(raw))


def _open(run, tfrecord_dir):
    """`training_run.open_run` of the tiny 3-epoch config on `run`, printing captured."""
    from dygan_tf.fit import parse_args, resolve_config
    from dygan_tf.training import run as training_run

    config = resolve_config(parse_args([str(a) for a in _flags(tfrecord_dir, run)]))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        state = training_run.open_run(
            config, str(tfrecord_dir), str(run), tf.distribute.get_strategy(), STEPS
        )
    return state, err.getvalue()


@pytest.mark.parametrize("how", ["truncate", "flip", "partial"])
def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(
    faulted_run, tfrecord_dir, tmp_path, how
):
    run = tmp_path / "run"
    shutil.copytree(faulted_run["run"], run)
    last = _last(run)
    if how == "partial":  # a kill while ckpt-4 was written: ckpt-3 is still the newest
        with open(os.path.join(last, f"{PARTIAL_PREFIX}k1ll3d-ckpt-4.npz"), "wb") as f:
            f.write(b"PK\x03\x04 half a file")
    else:
        _break(os.path.join(last, "ckpt-3"), how)
    before = _digests(run / "checkpoints")
    state, err = _open(run, tfrecord_dir)
    if how == "partial":
        assert state.start == 3 and err == ""
        assert checkpoints.latest(last) == os.path.join(last, "ckpt-3")
        return
    assert state.start == 2 and [int(r["epoch"]) for r in state.history] == [1, 2]
    notes = err.strip().splitlines()
    assert len(notes) == 1 and notes[0].startswith(f"note: {last}: passing over unreadable "), err
    assert "ckpt-3 (" in notes[0] and notes[0].endswith("resuming from ckpt-2"), notes[0]
    # ckpt-2's state: its epoch and step count (ckpt-3 had 3 and 6).
    assert int(state.checkpoint.epoch.numpy()) == 2
    assert int(state.gan.g_optimizer.iterations.numpy()) == 2 * STEPS
    assert _digests(run / "checkpoints") == before  # opening deletes nothing


def test_fall_back_then_training_continues(faulted_run, tfrecord_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(faulted_run["run"], run)
    _break(os.path.join(_last(run), "ckpt-3"), "flip")
    history = (run / "history.csv").read_text().splitlines()
    result = run_command(fit.main, *_flags(tfrecord_dir, run))
    assert result.returncode == 0, result.stderr
    notes = result.stderr.strip().splitlines()
    assert len(notes) == 1 and "passing over unreadable ckpt-3 (" in notes[0], result.stderr
    assert "Bad CRC-32" in notes[0]
    assert "resuming at epoch 3 (2 of 3 finished" in result.stdout
    lines = (run / "history.csv").read_text().splitlines()
    assert lines[:3] == history[:3] and _epochs(run) == [1, 2, 3]
    assert _iterations(os.path.join(_last(run), "ckpt-3")) == EPOCHS * STEPS  # rewritten
    assert sorted(checkpoints.checkpoints_in(_last(run))) == [2, 3]


def test_no_restorable_checkpoint_under_a_history_is_refused(faulted_run, tfrecord_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(faulted_run["run"], run)
    for number in (2, 3):
        _break(os.path.join(_last(run), f"ckpt-{number}"), "truncate")
    before = _digests(run)
    line = one_error_line(run_command(fit.main, *_flags(tfrecord_dir, run)))
    assert line.startswith(f"error: {_last(run)}: no restorable checkpoint (ckpt-3: "), line
    assert "records 3 finished epoch(s)" in line and "new run folder" in line
    assert _digests(run) == before  # nothing restarted, nothing rewritten


# ------------------------------------------------------- a shard corrupted mid-run
def _corrupt_after_check(tfrecord_dir, tmp_path, monkeypatch):
    """A copy of the shards with one train shard flipped after the up-front sha256 check
    (patched to pass, as it did before the byte flipped)."""
    import dygan_tf.data.pipeline

    copy = tmp_path / "records"
    shutil.copytree(tfrecord_dir, copy)
    shard = copy / read_manifest(copy)["splits"]["train"]["shards"][0]["file"]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    monkeypatch.setattr(dygan_tf.data.pipeline, "check_shards", lambda *a, **k: None)
    return copy, shard


def test_shard_corrupted_during_training_is_named(tfrecord_dir, tmp_path, monkeypatch):
    copy, shard = _corrupt_after_check(tfrecord_dir, tmp_path, monkeypatch)
    line = one_error_line(run_command(fit.main, *_flags(copy, tmp_path / "run", epochs=1)))
    assert line.startswith(f"error: {shard}: sha256 "), line
    assert "corrupted while being read" in line and "--verify" in line


def test_shard_corrupted_during_evaluation_is_named(run_dir, tfrecord_dir, tmp_path, monkeypatch):
    from dygan_tf.evaluation import report

    copy, shard = _corrupt_after_check(tfrecord_dir, tmp_path, monkeypatch)
    with pytest.raises(UserError, match=f"^{shard}: sha256 .*corrupted while being read"):
        report.evaluate_report([str(run_dir)], str(tmp_path / "eval"), str(copy), "train")
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------- export metadata
def test_export_metadata_records_the_in_plane_spacing_rule(savedmodel_dir):
    from dygan_tf.data import preprocessing

    metadata = json.loads(open(os.path.join(savedmodel_dir, "metadata.json")).read())
    assert metadata["in_plane"] == preprocessing.IN_PLANE
    assert metadata["in_plane"]["spacing_mm"] == 1.0 and "resampled" in metadata["in_plane"]["rule"]
