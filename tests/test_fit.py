"""fit and evaluate end to end on the tiny phantom: every discriminator, DyConv placement
and label mode, pix2pix3, TensorBoard contents, kill -9 and resume, reports, bad flags.

Training runs are shared between assertions (conftest.fit_runs, also used by
test_distribute.py): each new configuration costs a tf.function trace of its train step.
"""

import csv
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from dygan_tf import evaluate, fit
from dygan_tf.config.run_config import RunConfig
from dygan_tf.models.builders import build_dygan
from dygan_tf.run_folder import checkpoints
from dygan_tf.run_folder import files as run_files
from dygan_tf.utils.errors import UserError
from tests.helpers import (
    FIT_RUNS,
    FIT_STEPS,
    PATCH_D,
    REPO,
    checkpoint_counts,
    run_cli,
    run_in_process,
)

pytestmark = pytest.mark.slow

CONFIGS = FIT_RUNS
STEPS = FIT_STEPS


@pytest.fixture(scope="module")
def runs(fit_runs):
    """name -> run folder of the shared fit runs (conftest.fit_runs)."""
    return {name: run.path for name, run in fit_runs.items()}


def _history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _config(run_dir):
    with open(os.path.join(run_dir, "config.json")) as f:
        return RunConfig.from_dict(json.load(f))


@pytest.mark.parametrize("name", ["patch_down", "ms_both", "mgan"])
def test_run_folder_holds_config_model_history_and_checkpoints(runs, name):
    run_dir = runs[name]
    config = _config(run_dir)
    flags, epochs = CONFIGS[name]
    assert config.preset == "tiny" and config.train.epochs == epochs
    assert [int(r["epoch"]) for r in _history(run_dir)] == list(range(1, epochs + 1))
    for row in _history(run_dir):
        for t in ("flair", "t1", "t1ce"):
            assert float(row[f"val_psnr_{t}"]) > 0
    assert os.path.isfile(os.path.join(run_dir, "generator.keras"))
    for kind in ("last", "best"):
        latest = checkpoints.latest(os.path.join(run_dir, "checkpoints", kind))
        assert latest and os.path.isfile(latest + ".npz")  # the one format, on TensorFlow
    with open(os.path.join(run_dir, "run.json")) as f:
        info = json.load(f)
    assert info["validation_cases"]  # held out of the training split


def test_configurations_are_applied(runs):
    assert _config(runs["patch_down"]).model.discriminator == "patch"
    assert _config(runs["patch_down"]).model.dyconv == "down"
    assert _config(runs["ms_both"]).model.dyconv == "both"
    mgan = _config(runs["mgan"]).model
    assert (mgan.label_mode, mgan.dyconv) == ("input", "none")


def _pix2pix3_members(run_dir):
    """{target: (member config, train steps taken)} and the schedule of a pix2pix3 run."""
    with open(os.path.join(run_dir, run_files.BASELINE)) as f:
        spec = json.load(f)
    out = {}
    for target, folder in spec["members"].items():
        config = _config(os.path.join(run_dir, folder))
        latest = checkpoints.latest(os.path.join(run_dir, folder, "checkpoints", "last"))
        out[target] = (config, checkpoint_counts(latest)[1])
    return out, spec["schedule"]


def _assert_static_one_target_members(members):
    assert sorted(members) == ["flair", "t1", "t1ce"]
    for target, (config, _) in members.items():
        assert config.train.targets == (target,)
        assert (config.model.dyconv, config.model.discriminator) == ("none", "patch")
        assert not config.model.d_dyconv


def test_pix2pix3_matched_trains_one_static_model_per_target_with_the_same_total_steps(runs):
    members, schedule = _pix2pix3_members(runs["pix2pix3_matched"])
    assert schedule == "compute-matched"
    _assert_static_one_target_members(members)
    assert all(config.train.batch_slices == 3 for config, _ in members.values())
    # one DyGAN epoch of STEPS steps, split three ways
    assert sum(steps for _, steps in members.values()) == STEPS


def test_pix2pix3_trains_each_member_as_one_dygan_run(runs):
    # The paper's 3×pix2pix: each member one slice a step and DyGAN's steps per epoch,
    # exactly a one-target pix2pix run (`--dyconv none --targets T`, static PatchGAN).
    members, schedule = _pix2pix3_members(runs["pix2pix3"])
    assert schedule == "paper"
    _assert_static_one_target_members(members)
    dygan = _config(runs["ms_both"])
    for target, (config, steps) in members.items():
        assert config.train.batch_slices == dygan.train.batch_slices == 1
        assert steps == STEPS
        one = fit.resolve_config(
            fit.parse_args(
                ["--data", "d", "--out", "o", "--preset", "tiny", "--dyconv", "none"]
                + ["--targets", target, "--discriminator", "patch", "--d-dyconv", "off"]
            )
        )
        assert config.model == one.model
        assert dataclasses.replace(config.train, epochs=one.train.epochs) == one.train


def test_pix2pix3_resume_refuses_the_other_schedule(runs, tfrecord_dir):
    result = run_in_process(
        fit.main,
        "--data",
        tfrecord_dir,
        "--out",
        runs["pix2pix3_matched"],
        "--preset",
        "tiny",
        "--baseline",
        "pix2pix3",
        "--epochs",
        "1",
    )
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "--baseline pix2pix3-matched" in err[0], err


def test_ema_run_saves_the_average_and_checkpoints_both(runs):
    # patch_down trains with --ema 0.9 on two replicas: generator.keras holds the weights'
    # moving average; checkpoints/last holds the raw weights and (in G's optimizer) the
    # average.
    config = _config(runs["patch_down"])
    assert config.train.ema == 0.9 and _config(runs["ms_both"]).train.ema == 0.0
    gan = build_dygan(config)
    networks = ("generator", "discriminator", "g_optimizer", "d_optimizer")
    checkpoint = checkpoints.Checkpoint(**{name: getattr(gan, name) for name in networks})
    checkpoint.restore(checkpoints.latest(os.path.join(runs["patch_down"], "checkpoints", "last")))
    saved = run_files.load_generator(os.path.join(runs["patch_down"], "generator.keras"))
    raw = [w.numpy() for w in gan.generator.trainable_weights]
    assert any(not np.allclose(r, s.numpy()) for r, s in zip(raw, saved.trainable_weights))
    with gan.averaged_generator() as generator:
        for got, want in zip(generator.trainable_weights, saved.trainable_weights):
            np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_optimizer_state_is_checkpointed(runs):
    latest = checkpoints.latest(os.path.join(runs["ms_both"], "checkpoints", "last"))
    assert checkpoint_counts(latest) == (2, 2 * STEPS, 2 * STEPS)
    stored = checkpoints.read(latest)["g_optimizer"]
    assert sum("_momentum" in p for p in stored) > 2 and sum("_velocity" in p for p in stored) > 2


def test_tensorboard_has_losses_lr_psnr_per_target_and_image_grid(runs):
    tags = {}
    for path in glob.glob(os.path.join(runs["ms_both"], "logs", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
    for tag in (
        "loss/g_l1_loss",
        "loss/d_loss",
        "learning_rate",
        "val/psnr_flair",
        "val/psnr_t1",
        "val/psnr_t1ce",
        "val/ssim_t1ce",
        "val/psnr_mean",
        "val/source_real_generated",
    ):
        assert tags.get(tag) == {1, 2}, tag


def test_evaluate_writes_report_table_and_figure(runs, tfrecord_dir, tmp_path):
    out = str(tmp_path / "eval")
    evaluate.main(
        [
            "--run",
            runs["ms_both"],
            "--split",
            "test",
            "--out",
            out,
            "--compare",
            runs["pix2pix3"],
            runs["mgan"],
        ]
    )
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    assert report["split"] == "test" and report["slices"] == 10  # 2 test cases x 5
    assert report["data"] == os.path.abspath(str(tfrecord_dir))
    for scores in [
        report["per_target"],
        *report["baselines"].values(),
        *report["compare"].values(),
    ]:
        assert sorted(scores) == ["flair", "t1", "t1ce"]
        for values in scores.values():
            assert sorted(values) == sorted(
                ["psnr", "ssim", "psnr_brain", "ssim_brain", "ssim_tumor", "mae"]
            )
            assert values["psnr"] > 0 and -1 <= values["ssim"] <= 1
    assert sorted(report["baselines"]) == ["copy_source", "intensity_lut"]
    assert len(report["compare"]) == 3
    lines = open(os.path.join(out, "report.md")).read().splitlines()
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| method | FLAIR | T1 | T1CE")
    assert len(rows) == 1 + 3 + 2  # header, three runs, two baselines
    assert any("3×pix2pix" in r for r in rows) and any("MGAN" in r for r in rows)
    with open(os.path.join(out, "figure.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rerun_with_other_flags_is_refused(runs, tfrecord_dir):
    with pytest.raises(UserError, match="another configuration"):
        fit.main(
            [
                "--data",
                str(tfrecord_dir),
                "--out",
                runs["ms_both"],
                "--preset",
                "tiny",
                "--lambda-l1",
                "3",
            ]
        )


def test_kill_9_mid_run_then_resume_keeps_every_epoch_once(tfrecord_dir, tmp_path):
    run_dir = str(tmp_path / "resume")
    flags = [
        "--data",
        str(tfrecord_dir),
        "--out",
        run_dir,
        "--preset",
        "tiny",
        "--epochs",
        "3",
        "--steps-per-epoch",
        "2",
        *PATCH_D,
    ]
    args = [sys.executable, "-m", "dygan_tf.fit", *flags]
    env = dict(os.environ, PYTHONPATH=REPO)
    log = open(tmp_path / "first_run.log", "w")
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    last = os.path.join(run_dir, "checkpoints", "last")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.latest(last):  # an epoch is finished once it is saved
            break
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "first_run.log").read_text()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = checkpoint_counts(checkpoints.latest(last))[0]
    assert 1 <= done_before < 3
    assert [int(r["epoch"]) for r in _history(run_dir)][:done_before] == list(
        range(1, done_before + 1)
    )
    # The restart reads only what the killed process left on disk, so it runs in this
    # process (helpers.run_in_process), saving a TensorFlow start-up.
    result = run_in_process(fit.main, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming at epoch {done_before + 1}" in result.stdout
    assert [int(r["epoch"]) for r in _history(run_dir)] == [1, 2, 3]
    latest = checkpoints.latest(os.path.join(run_dir, "checkpoints", "last"))
    assert checkpoint_counts(latest)[1] == 6


# One case per command runs in a fresh interpreter (its import-time output counts too);
# the others run the same `main` in this process (helpers.run_in_process).
@pytest.mark.parametrize(
    "module, args, expected, fresh",
    [
        (fit, ["--data", "x", "--out", "y", "--dyconv", "sideways"], "--dyconv", False),
        (fit, ["--out", "y"], "--data", False),
        (fit, ["--data", "/nonexistent/records", "--out", "y"], "manifest", True),
        (fit, ["--data", "x", "--out", "y", "--image-size", "50"], "image_size", False),
        (evaluate, ["--run", "/nonexistent/run", "--out", "y"], "not a folder", True),
    ],
)
def test_bad_input_is_one_line_exit_2(module, args, expected, fresh):
    if fresh:
        result = run_cli(module.__name__, *args)
    else:
        result = run_in_process(module.main, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_refuses_a_run_without_a_model(tfrecord_dir, tmp_path):
    run_dir = tmp_path / "empty_run"
    run_dir.mkdir()
    result = run_in_process(
        evaluate.main, "--run", run_dir, "--data", tfrecord_dir, "--out", tmp_path / "e"
    )
    assert result.returncode == 2 and "generator.keras" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_recipe_adds_ema_where_the_flags_do_not_set_it():
    # fit --demo trains the demo preset with the demo's recipe (fit_lib.DEMO_RECIPE:
    # EMA 0.99); --ema overrides it, and --preset demo alone stays EMA-free (the paper
    # tables train the preset as the paper does).
    from dygan_tf.training.fit_lib import DEMO_RECIPE

    def ema(*argv):
        return fit.resolve_config(fit.parse_args(list(argv))).train.ema

    assert ema("--demo") == DEMO_RECIPE["ema"] == 0.99
    assert ema("--demo", "--ema", "0") == 0.0
    assert ema("--data", "d", "--out", "o", "--preset", "demo") == 0.0
