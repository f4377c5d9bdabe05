"""The paper's rows as flags, and the resumable command that reruns Tables 2-4."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dygan_tf.config.run_config import RunConfig, get_preset
from dygan_tf.experiments import paired, paper_tables, summary, tables
from tests.helpers import REPO, one_error_line, run_in_process

MODULE = "dygan_tf.experiments.paper_tables"


def test_paired_difference_against_a_hand_computation():
    a = {0: 20.3, 1: 20.5, 2: 20.1, 3: 20.4, 4: 20.2, 7: 99.0}  # seed 7: no partner
    b = {0: 20.0, 1: 20.0, 2: 20.0, 3: 20.0, 4: 20.0, 5: 1.0}
    d = paired.paired_difference(a, b)
    # differences 0.3 0.5 0.1 0.4 0.2: mean 0.3, SD sqrt(0.1 / 4), t(0.975, 4) = 2.776445
    half = 2.776445 * np.sqrt(0.1 / 4) / np.sqrt(5)
    assert d["seeds"] == [0, 1, 2, 3, 4] and d["n"] == 5
    assert d["mean"] == pytest.approx(0.3) and d["sd"] == pytest.approx(np.sqrt(0.025))
    assert d["half_width"] == pytest.approx(half, rel=1e-6)
    assert d["ci"] == pytest.approx([0.3 - half, 0.3 + half], rel=1e-6)
    assert d["verdict"] == paired.HOLDS
    assert paired.paired_difference(b, a)["verdict"] == paired.REVERSED
    mixed = paired.paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.5, 1: 1.5, 2: 1.5})
    assert mixed["verdict"] == paired.NOT_RESOLVED and mixed["mean"] == pytest.approx(0.5)
    one = paired.paired_difference({0: 1.0}, {0: 0.0})
    assert one["ci"] is None and one["verdict"] == paired.NOT_RESOLVED
    assert paired.paired_difference({}, {0: 1.0})["verdict"] == paired.NO_RUNS


def test_unpaired_difference_is_welchs_interval():
    d = paired.independent_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0])
    # variances 1 and 5/3; se^2 = 1/3 + 5/12 = 0.75; Welch's df = 0.75^2 / ((1/3)^2 / 2
    # + (5/12)^2 / 3) = 4.9592; half-width t(0.975, 4.9592) * sqrt(0.75) = 2.2317
    df = 0.75**2 / ((1 / 3) ** 2 / 2 + (5 / 12) ** 2 / 3)
    from scipy import stats

    half = stats.t.ppf(0.975, df) * np.sqrt(0.75)
    assert d["mean"] == pytest.approx(-1.5) and d["half_width"] == pytest.approx(half)
    assert half == pytest.approx(2.2317, abs=1e-4) and d["verdict"] == paired.WITHIN_SPREAD
    apart = paired.independent_difference([10.0, 10.1, 9.9], [1.0, 1.1, 0.9])
    assert apart["verdict"] == paired.APART
    assert paired.independent_difference([1.0], [2.0, 3.0])["ci"] is None


def test_every_row_is_a_valid_fit_command_and_the_plan_pairs_seeds():
    from dygan_tf import fit

    for row in tables.ROWS:
        config = fit.resolve_config(fit.parse_args(["--data", "d", "--out", "o", *row.flags]))
        assert config.train.targets == row.targets, row.id
    by_id = {r.id: r for r in tables.ROWS}
    assert by_id["t3_lambda100"].same_as == "t2_ms_dygan"
    plan = paper_tables.plan(tables.TABLES)
    # Table 2: 4 rows x 5 seeds; Table 4: 5 x 3; Table 3: λ 10 and 300 x 3 (λ 100 is
    # Table 2's Ms_DyGAN run of the same seed).
    assert len(plan) == 20 + 15 + 6
    assert len(set((r.id, s) for r, s in plan)) == len(plan)
    assert [s for _, s in plan] == sorted(s for _, s in plan)  # seed by seed
    only = paper_tables.plan((3,), seed_list=(0, 1), row_ids=["t3_lambda100"])
    assert [(r.id, s) for r, s in only] == [("t2_ms_dygan", 0), ("t2_ms_dygan", 1)]
    # The backends: TensorFlow's row is Table 2's Ms_DyGAN run; JAX and PyTorch train
    # the same flags with --backend.
    backends = paper_tables.plan(paper_tables.parse_tables("backends"), seed_list=(0,))
    assert [r.id for r, _ in backends] == ["t2_ms_dygan", "b_jax", "b_torch"]
    assert backends[1][0].flags[-2:] == ("--backend", "jax")
    assert paper_tables.parse_tables("all,backends") == (2, 4, 3, "backends")


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--table", "5"], "--table: expected 2, 3, 4"),
        (["--table", "2,x"], "found 'x'"),
        (["--seeds", "3-1"], "--seeds: expected seeds like 0-4 or 0,1,2, found '3-1'"),
        (["--seeds", "a"], "--seeds:"),
        (["--rows", "t9"], "--rows: unknown row t9"),
        (["--epochs", "0"], "--epochs: expected >= 1"),
        (["--data", "/nonexistent"], "--data /nonexistent/manifest.json: not found"),
    ],
)
def test_bad_flags_are_one_line_exit_2(argv, needle, tmp_path):
    result = run_in_process(paper_tables.main, *argv, "--records", tmp_path / "r")
    assert needle in one_error_line(result)
    assert not (tmp_path / "r").exists()


def _runner(tfrecord_dir, tmp_path, seeds):
    return [sys.executable, "-m", MODULE, "--preset", "tiny", "--epochs", "2"] + [
        "--steps-per-epoch",
        "2",
        "--rows",
        "t4_pix2pix,t4_up",
        "--seeds",
        seeds,
        "--data",
        str(tfrecord_dir),
        "--heldout",
        str(tfrecord_dir),
        "--runs",
        str(tmp_path / "runs"),
        "--records",
        str(tmp_path / "records"),
    ]


def _env(tmp_path):
    return dict(os.environ, PYTHONPATH=REPO, DYGAN_CACHE_DIR=str(tmp_path / "cache"))


def _snapshot(folder):
    return {
        os.path.relpath(os.path.join(root, f), folder): open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(folder)
        for f in files
    }


@pytest.mark.slow
def test_the_runner_records_resumes_a_killed_run_and_summarises(tfrecord_dir, tmp_path):
    """2 rows x 2 seeds: seed 0 finishes; the seed-1 pass is killed after the first
    run's first epoch; the rerun leaves seed 0's records as they were, resumes the
    killed run at epoch 2 and finishes; results.json holds the four runs and the pairs."""
    env, records = _env(tmp_path), tmp_path / "records"
    done = subprocess.run(
        _runner(tfrecord_dir, tmp_path, "0"), env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seed0 = {row: _snapshot(records / "runs" / row / "seed0") for row in ("t4_pix2pix", "t4_up")}
    assert "record.json" in seed0["t4_up"] and "report_heldout.json" in seed0["t4_up"]

    # Seed 1's first run, killed (with its fit) once its first epoch is checkpointed.
    killed = subprocess.Popen(
        _runner(tfrecord_dir, tmp_path, "0,1"),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoint = tmp_path / "runs" / "t4_pix2pix" / "seed1" / "checkpoints" / "last"
    deadline = time.monotonic() + 300
    # Polled often: epoch 2 of this tiny run (2 steps, validation, two saves) can finish
    # within a coarser poll, and the kill must land inside it.
    while not (checkpoint / "ckpt-1.npz").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "no first epoch"
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (records / "runs" / "t4_pix2pix" / "seed1").exists()

    rerun = subprocess.run(
        _runner(tfrecord_dir, tmp_path, "0,1"), env=env, capture_output=True, text=True, cwd=REPO
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "4 runs, 2 already recorded" in rerun.stdout
    assert "t4_pix2pix seed 1: resuming" in rerun.stdout
    log = (tmp_path / "runs" / "t4_pix2pix" / "seed1.log").read_text()
    assert "resuming at epoch 2" in log
    for row, files in seed0.items():  # finished runs untouched
        assert _snapshot(records / "runs" / row / "seed0") == files

    results = json.loads((records / summary.RESULTS_JSON).read_text())
    assert results["runs"] == 4 and results["about"].startswith("These verdicts are about")
    record = results["records"]["t4_pix2pix"]["1"]
    assert record["attempts"] == 2 and record["killed_attempts"] == 1
    assert record["command"][:3] == ["python", "-m", "dygan_tf.fit"]
    assert {"cpu", "cpu_kind", "cpu_flags", "cores"} <= set(record["machine"])
    assert record["parameters"]["generator"] > 0 and record["inference_s_per_case"] > 0
    for row in ("t4_pix2pix", "t4_up"):
        for test_set in tables.TEST_SETS:
            stat = results["rows"][row][test_set]["t1"]["psnr"]
            runs = results["records"][row]
            expected = [runs[s]["scores"][test_set]["t1"]["psnr"] for s in ("0", "1")]
            assert stat["n"] == 2 and stat["mean"] == pytest.approx(np.mean(expected))
            assert stat["sd"] == pytest.approx(np.std(expected, ddof=1))
    claim5 = next(c for c in results["claims"] if c["claim"] == 5)
    pair = next(p for p in claim5["pairs"] if (p["better"], p["worse"]) == ("t4_up", "t4_pix2pix"))
    assert pair["heldout"]["n"] == 2 and pair["heldout"]["ci"] is not None
    assert pair["paper_diff"] == pytest.approx(22.7242 - 22.4321, abs=1e-4)
    assert next(c for c in results["claims"] if c["claim"] == 1)["pairs"][0]["demo"]["n"] == 0
    text = (records / summary.RESULTS_MD).read_text()
    assert text.startswith("**These verdicts are about a 64 px phantom") and "Table 4" in text
    assert (records / summary.FIGURE).stat().st_size > 1000
    # The summary is a function of the committed records alone.
    written = (records / summary.RESULTS_JSON).read_text()
    again = run_in_process(paper_tables.main, "--summary", "--records", records)
    assert again.returncode == 0, again.stderr
    assert (records / summary.RESULTS_JSON).read_text() == written


def _discriminator_dyconvs(config):
    from dygan_tf.layers.dyconv import DyConv2D
    from dygan_tf.models.builders import build_networks
    from dygan_tf.models.dygan import leaf_layers

    _, discriminator = build_networks(config.model)
    return sum(isinstance(layer, DyConv2D) for layer in leaf_layers(discriminator))


@pytest.mark.parametrize(
    "kind, setting, count",
    [("multiscale", "on", 9), ("multiscale", "off", 0), ("patch", "on", 4), ("patch", "off", 0)],
)
def test_d_dyconv_flag_sets_dyconv_in_either_discriminator(kind, setting, count):
    from dygan_tf import fit

    args = fit.parse_args(
        ["--data", "d", "--out", "o", "--preset", "tiny"]
        + [
            "--discriminator",
            kind,
            "--d-dyconv",
            setting,
        ]
    )
    config = fit.resolve_config(args)
    assert config.model.d_dyconv is (setting == "on")
    assert _discriminator_dyconvs(config) == count


def test_d_dyconv_is_a_choice_and_old_configs_read_as_they_were():
    from dygan_tf import fit

    result = run_in_process(fit.main, "--data", "d", "--out", "o", "--d-dyconv", "false")
    assert "--d-dyconv: invalid choice: 'false'" in one_error_line(result)
    old = os.path.join(REPO, "tests", "data", "release_0_1_0", "run_tiny", "config.json")
    with open(old, encoding="utf-8") as f:
        saved = json.load(f)
    config = RunConfig.from_dict(saved)
    assert json.loads(config.to_json()) == saved and config.model.d_dyconv is True
    assert get_preset("demo").model.d_dyconv is True  # the default stays Ms_DyGAN's


def test_a_generator_that_cannot_see_the_task_is_refused_in_one_line(tfrecord_dir, tmp_path):
    from dygan_tf import fit

    out = tmp_path / "blind"
    result = run_in_process(fit.main, "--data", tfrecord_dir, "--out", out, "--dyconv", "none")
    line = one_error_line(result)
    assert "--dyconv none with --label-mode kernel" in line and "flair,t1,t1ce" in line
    assert not out.exists()


@pytest.mark.slow
def test_one_target_without_dyconv_still_trains_as_pix2pix(tfrecord_dir, tmp_path):
    from dygan_tf import fit
    from dygan_tf.run_folder import files as run_folder

    out = tmp_path / "pix2pix_t1"
    argv = ["--data", tfrecord_dir, "--out", out, "--preset", "tiny", "--dyconv", "none"]
    argv += ["--targets", "t1", "--discriminator", "patch", "--d-dyconv", "off"]
    result = run_in_process(fit.main, *argv, "--epochs", "1", "--steps-per-epoch", "1")
    assert result.returncode == 0, result.stderr
    config = run_folder.read_config(out)
    assert config.train.targets == ("t1",) and config.model.dyconv == "none"
    assert (out / "generator.keras").is_file()


def test_the_records_folder_is_not_ignored_by_git():
    """The records are the state a fresh clone resumes from: git must not ignore them
    (a bare `runs/` pattern once hid docs/results/paper-tables/runs/)."""
    record = os.path.join(paper_tables.DEFAULT_RECORDS, "runs", "t2_dygan", "seed0", "record.json")
    result = subprocess.run(
        ["git", "-C", REPO, "check-ignore", "-q", record], capture_output=True, text=True
    )
    if result.returncode == 128:  # not a git checkout (an installed copy)
        pytest.skip(result.stderr.strip())
    assert result.returncode == 1, f"{record} is ignored by git"
