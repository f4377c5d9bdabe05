"""The λ search on the tiny phantom: results files and plot, resume without retraining,
the HyperModel builds through dygan_tf.models.builders, bad flags are one line with exit 2.

One search of two λ values (1 epoch, 2 steps each) is shared by the assertions.
"""

import glob
import json
import os

import keras_tuner as kt
import pytest
import tensorflow as tf

from dygan_tf.config.run_config import get_preset
from dygan_tf.models import builders
from dygan_tf.run_folder import files as run_files
from dygan_tf.training import run as training_run
from dygan_tf.tuning import results as tuning_results
from dygan_tf.tuning import search
from dygan_tf.tuning.hypermodel import LambdaHyperModel
from tests.helpers import PATCH_D, run_cli, run_in_process
from tuning import search_lambda

pytestmark = pytest.mark.slow

VALUES = "1,100"
TARGETS = ["flair", "t1", "t1ce"]


def _argv(data, out):
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--values",
        VALUES,
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        *PATCH_D,
    ]


@pytest.fixture(scope="module")
def search_dir(tfrecord_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "lambda"
    assert search_lambda.main(_argv(tfrecord_dir, out)) == 0
    return out


def _results(out):
    with open(os.path.join(out, tuning_results.RESULTS_JSON)) as f:
        return json.load(f)


def test_results_json_md_and_plot(search_dir):
    results = _results(search_dir)
    assert [t["lambda"] for t in results["trials"]] == [1.0, 100.0]
    assert results["best_lambda"] in (1.0, 100.0)
    best = max(results["trials"], key=lambda t: t["mean_psnr"])
    assert results["best_lambda"] == best["lambda"]
    with open(os.path.join(search_dir, search.SEARCH_FILE)) as f:
        recorded = json.load(f)["validation_cases"]
    assert results["validation_cases"] == recorded and recorded
    with open(os.path.join(search_dir, "config.json")) as f:
        seed = json.load(f)["train"]["seed"]
    assert recorded == training_run.choose_validation_cases(results["data"], seed)
    for trial in results["trials"]:
        assert trial["status"] == "COMPLETED"
        assert sorted(trial["per_target"]) == TARGETS
        psnr = [trial["per_target"][t]["psnr"] for t in TARGETS]
        assert all(p > 0 for p in psnr)
        assert all(-1 <= trial["per_target"][t]["ssim"] <= 1 for t in TARGETS)
        assert trial["mean_psnr"] == pytest.approx(sum(psnr) / 3)
    rows = [
        line
        for line in open(os.path.join(search_dir, tuning_results.RESULTS_MD))
        if line.startswith("| ") and "---" not in line
    ]
    assert rows[0].startswith("| λ | FLAIR | T1 | T1CE | mean PSNR")
    assert sum("(best)" in r for r in rows[1:3]) == 1  # ours; the paper's table follows
    with open(os.path.join(search_dir, tuning_results.PLOT), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not glob.glob(os.path.join(search_dir, ".partial-*"))


def test_tensorboard_logs_per_trial(search_dir):
    trials = sorted(os.listdir(os.path.join(search_dir, run_files.LOGS)))
    assert len(trials) == 2
    for trial in trials:
        tags = set()
        for path in glob.glob(os.path.join(search_dir, "logs", trial, "*", "*", "events.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                tags.update(v.tag for v in event.summary.value)
        assert {"epoch_g_l1_loss", "epoch_psnr_mean", "epoch_psnr_flair"} <= tags, tags


def test_rerun_resumes_without_training(search_dir, tfrecord_dir, monkeypatch):
    before = _results(search_dir)
    for path in glob.glob(os.path.join(search_dir, "trial_*", "trial.json")):
        with open(path) as f:
            assert json.load(f)["status"] == "COMPLETED"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(LambdaHyperModel, "fit", no_training)
    assert search_lambda.main(_argv(tfrecord_dir, search_dir)) == 0
    assert _results(search_dir) == before
    assert len(glob.glob(os.path.join(search_dir, "trial_*", "trial.json"))) == 2


def test_rerun_with_other_flags_is_refused(search_dir, tfrecord_dir):
    with pytest.raises(search.UserError, match="other settings"):
        search_lambda.main([*_argv(tfrecord_dir, search_dir), "--lr", "1e-3"])


def test_hypermodel_builds_through_the_fit_builder(tfrecord_dir, monkeypatch):
    made = []

    def spy(*args, **kwargs):
        made.append((args, kwargs, original(*args, **kwargs)))
        return made[-1][2]

    original = builders.build_dygan
    monkeypatch.setattr(builders, "build_dygan", spy)
    config = get_preset("tiny")
    hypermodel = LambdaHyperModel(config, str(tfrecord_dir), [10.0, 300.0], ["x"], 3)
    hp = kt.HyperParameters()
    hp.values["lambda_l1"] = 300.0
    model = hypermodel.build(hp)
    assert len(made) == 1 and model is made[0][2]
    args, kwargs, _ = made[0]
    assert args == (config, 3) and kwargs == {"lambda_l1": 300.0}
    assert model.lambda_l1 == 300.0
    assert training_run.build_dygan is original  # fit trains through the same builder


@pytest.mark.parametrize(
    "oracle, max_trials, kind, expected_trials",
    [
        ("grid", None, kt.GridSearch, 3),
        ("bayesian", 2, kt.BayesianOptimization, 2),
    ],
)
def test_oracle_choice(tfrecord_dir, tmp_path, oracle, max_trials, kind, expected_trials):
    hypermodel = LambdaHyperModel(
        get_preset("tiny"), str(tfrecord_dir), [1.0, 10.0, 100.0], ["x"], 1
    )
    tuner = search.make_tuner(
        hypermodel, tmp_path / "s", oracle, [1.0, 10.0, 100.0], max_trials, seed=0
    )
    assert isinstance(tuner, kind) and tuner.oracle.max_trials == expected_trials
    assert tuner.project_dir == str(tmp_path / "s")
    assert tuner.oracle.get_space().get_config()["space"][0]["config"]["values"] == [
        1.0,
        10.0,
        100.0,
    ]


# The first case runs in a fresh interpreter (its import-time output counts too); the
# others run the same `main` in this process (helpers.run_in_process).
@pytest.mark.parametrize(
    "args, expected, fresh",
    [
        (["--values", "0,10"], "--values", True),
        (["--values", "1,abc"], "'abc' is not a number", False),
        (["--values", ""], "--values", False),
        (["--values", "10,1,10"], "given twice", False),
        (["--oracle", "bayesian"], "--max-trials", False),
        (["--data", "/nonexistent/records"], "not a folder", False),
    ],
)
def test_bad_input_is_one_line_exit_2(tfrecord_dir, tmp_path, args, expected, fresh):
    argv = ["--data", str(tfrecord_dir), "--out", str(tmp_path / "s"), *args]
    if fresh:
        result = run_cli("tuning.search_lambda", *argv)
    else:
        result = run_in_process(search_lambda.main, *argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not os.path.exists(tmp_path / "s")


@pytest.mark.slow
def test_the_search_runs_a_trial_on_jax(tfrecord_dir, tmp_path):
    """`tuning.search_lambda --backend jax`: one λ, trained and scored on JAX."""
    pytest.importorskip("jax")
    out = tmp_path / "search"
    argv = ["--backend", "jax", "--data", tfrecord_dir, "--out", out, "--preset", "tiny"]
    argv += ["--values", "10", "--epochs", "1", "--steps-per-epoch", "2"]
    result = run_cli("tuning.search_lambda", *argv, "--discriminator", "patch", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == "jax" and results["best_lambda"] == 10.0
    (trial,) = results["trials"]
    assert trial["status"] == "COMPLETED" and trial["mean_psnr"] > 0
