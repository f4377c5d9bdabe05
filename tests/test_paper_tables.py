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
from research import paired, paper_tables, summary, tables
from tests.helpers import REPO, one_error_line, run_in_process

MODULE = "research.paper_tables"


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
        if row.members:  # (trained as its members, each a row of its own)
            assert [t for t, _ in row.members] == list(row.targets), row.id
            continue
        config = fit.resolve_config(fit.parse_args(["--data", "d", "--out", "o", *row.flags]))
        assert config.train.targets == row.targets, row.id
    by_id = {r.id: r for r in tables.ROWS}
    assert by_id["t3_lambda100"].same_as == "t2_ms_dygan"
    plan = paper_tables.plan(tables.TABLES)
    # Table 2: the paper's 3×pix2pix (3 one-target runs) and 4 rows x 5 seeds; Table 4:
    # 5 x 3, less its pix2pix, which is the paper's 3×pix2pix T1 run of the same seed;
    # Table 3: λ 10 and 300 x 3 (λ 100 is Table 2's Ms_DyGAN run of the same seed).
    assert len(plan) == 35 + 12 + 6
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
    assert record["benchmark"] == record["phantom"] == "v1"
    assert sorted(record["manifests"]) == ["demo", "heldout", "train"]
    assert record["manifests"]["demo"] == record["manifests"]["train"]  # one folder
    cases = record["per_case_psnr"]["heldout"]["t1"]
    assert len(cases) == 2 and np.mean(list(cases.values())) == pytest.approx(
        record["scores"]["heldout"]["t1"]["psnr"]
    )  # 2 test cases with 5 slices each: the mean of case means is the slice mean
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


def test_the_papers_3x_pix2pix_is_three_table_4_pix2pix_runs():
    from dygan_tf import fit
    from dygan_tf.config.run_config import pix2pix_member_config

    paper = tables.ROW_BY_ID["t2_pix2pix3_paper"]
    assert dict(paper.members)["t1"] == "t4_pix2pix"  # one run, cited by both tables
    dygan = fit.resolve_config(
        fit.parse_args(["--data", "d", "--out", "o", *tables.ROW_BY_ID["t2_dygan"].flags])
    )
    for target, member_id in paper.members:
        member = tables.ROW_BY_ID[member_id]
        config = fit.resolve_config(fit.parse_args(["--data", "d", "--out", "o", *member.flags]))
        # exactly a member of `fit --baseline pix2pix3`: one slice a step, DyGAN's steps
        assert config == pix2pix_member_config(dygan, target, "paper"), member_id
        assert config.train.batch_slices == dygan.train.batch_slices == 1
    # seed 0 of Tables 2 and 4 trains Table 4's pix2pix once
    ids = [r.id for r, _ in paper_tables.plan((2, 4), seed_list=(0,))]
    assert ids.count("t4_pix2pix") == 1 and len(ids) == len(set(ids)) == 7 + 4
    assert ids[:3] == ["p_pix2pix_flair", "t4_pix2pix", "p_pix2pix_t1ce"]
    # The compute-matched row keeps today's members (one DyGAN run's steps, together).
    matched = tables.ROW_BY_ID["t2_pix2pix3"]
    assert matched.flags == ("--baseline", "pix2pix3-matched")
    assert matched.label == "3×pix2pix, compute-matched"
    # Both readings of claim 1, the paper's first.
    ones = [c for c in tables.CLAIMS if c.number == 1]
    assert [c.pairs[0][1] for c in ones] == ["t2_pix2pix3_paper", "t2_pix2pix3"]


def _fake_record(row, seed, psnr, benchmark=None, manifests=None, cases=None):
    targets = list(tables.ROW_BY_ID[row].targets)
    record = {"row": row, "seed": seed, "targets": targets, "table": 2}
    record["scores"] = {s: {t: {"psnr": psnr} for t in targets} for s in ("demo", "heldout")}
    record.update(train_wall_s=1.0, inference_s_per_case=0.1, commit="c", label=row)
    record["parameters"] = {"generator": 1, "discriminator": 1}
    record["machine"] = {"cpu": "x", "cpu_kind": "y", "cpu_flags": []}
    if benchmark:
        record["benchmark"] = benchmark
    if manifests:
        record["manifests"] = manifests
    if cases:
        record["per_case_psnr"] = {"heldout": {t: cases for t in targets}}
    return record


def _write_records(folder, records):
    for record in records:
        out = folder / "runs" / record["row"] / f"seed{record['seed']}"
        out.mkdir(parents=True)
        (out / "record.json").write_text(json.dumps(record))


def test_statistics_against_hand_computed_values():
    # A family of three comparisons, differences over five seeds each.
    d1 = [0.3, 0.5, 0.1, 0.4, 0.2]  # mean 0.3, sd sqrt(0.025): t = 4.2426, 4 df
    d2 = [0.9, -0.2, 0.8, 0.7, 0.6]  # mean 0.56, one seed against
    d3 = [0.1, -0.1, 0.2, -0.2, 0.05]
    entries = [
        paired.compare(dict(enumerate(d)), dict.fromkeys(range(5), 0.0), 0.5) for d in (d1, d2, d3)
    ]
    from scipy import stats

    p1 = 2 * stats.t.sf(0.3 / (np.sqrt(0.025) / np.sqrt(5)), 4)
    assert entries[0]["p_t"] == pytest.approx(p1) and p1 == pytest.approx(0.013236, abs=1e-6)
    paired.judge_family(entries)
    ps = [e["p_t"] for e in entries]
    order = np.argsort(ps)  # Holm: (3 - rank) x p, running maximum, capped at 1
    expected, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * ps[i]))
        expected[i] = running
    assert [e["p_holm"] for e in entries] == pytest.approx(expected)
    assert entries[0]["p_holm"] == pytest.approx(3 * p1)
    # One-sided exact sign flip: all five above 0 is 1 of 32 patterns.
    assert entries[0]["p_sign_flip"] == pytest.approx(1 / 32)
    # d2: |d| = .9 .2 .8 .7 .6, sum of observed signs 2.8; patterns at least that:
    # all positive (3.2), and the observed one (2.8): 2 of 32.
    assert entries[1]["p_sign_flip"] == pytest.approx(2 / 32)
    assert entries[0]["verdict"] == paired.HOLDS  # Holm 0.040 and sign flip 0.031
    # d2's t interval excludes 0, but Holm does not keep it (and nor does the sign flip)
    assert entries[1]["ci"][0] > 0 and entries[1]["p_holm"] >= 0.05
    assert entries[1]["verdict"] == paired.NOT_RESOLVED
    assert entries[2]["verdict"] == paired.NOT_RESOLVED
    # Power: a gap of one SD at two-sided 0.05 needs 10 pairs for 80 % (noncentral t:
    # n = 10 gives 0.803, n = 9 0.761); at 0.05 / 3, 14 pairs.
    assert paired.seeds_for_power(1.0, 1.0, 1) == 10
    assert paired.seeds_for_power(1.0, 1.0, 3) == 14
    assert paired.seeds_for_power(1.0, 0.01, 1) == paired.MAX_SEEDS + 1
    assert paired.seeds_for_power(None, 0.5, 1) is None
    # Reversed: the other way round, both tests.
    back = paired.judge_family(
        [paired.compare(dict.fromkeys(range(5), 0.0), dict(enumerate(d1)), 0.5)]
    )
    assert back[0]["verdict"] == paired.REVERSED


def test_case_bootstrap_resamples_seeds_and_cases():
    a = {s: {"c1": 1.0 + s, "c2": 3.0 + s, "c3": 2.0 + s} for s in range(3)}
    b = {s: {"c1": 0.0, "c2": 0.0, "c3": 0.0, "extra": 9.0} for s in range(3)}
    low, high = paired.case_bootstrap(a, b, draws=2000)
    # the mean difference is 3; resampling cases and seeds spreads it both ways
    assert low < 3.0 < high and 1.0 <= low and high <= 5.0
    assert paired.case_bootstrap({0: {"c": 1.0}}, {0: {"c": 0.0}}) is None


def test_records_of_two_benchmarks_or_rebuilt_data_are_refused_in_one_table(tmp_path):
    mixed = tmp_path / "mixed"
    _write_records(
        mixed,
        [_fake_record("t2_dygan", 0, 30.0), _fake_record("t2_mgan", 0, 29.0, benchmark="v2")],
    )
    result = run_in_process(paper_tables.main, "--summary", "--records", mixed)
    line = one_error_line(result)
    assert "a record of benchmark v2, beside records of benchmark v1" in line
    assert not (mixed / summary.RESULTS_JSON).exists()
    rebuilt = tmp_path / "rebuilt"
    _write_records(
        rebuilt,
        [
            _fake_record("t2_dygan", 0, 30.0, "v2", {"train": "a" * 64, "test_mni": "b" * 64}),
            _fake_record("t2_mgan", 0, 29.0, "v2", {"train": "a" * 64, "test_mni": "c" * 64}),
        ],
    )
    line = one_error_line(run_in_process(paper_tables.main, "--summary", "--records", rebuilt))
    assert "its test_mni data's manifest (sha256 cccccccccccc…) differs" in line
    # A run of other data is refused before it trains (the runner's own check).
    data = {"benchmark": "v1", "manifests": {"train": "d" * 64}}
    with pytest.raises(paper_tables.UserError, match="holds records of benchmark v2"):
        summary.check_same_data(_fake_record("t2_dygan", 0, 1.0, "v2"), data, "R")
    same = _fake_record("t2_dygan", 0, 1.0, "v1", {"train": "e" * 64})
    with pytest.raises(paper_tables.UserError, match="its records' train data"):
        summary.check_same_data(same, data, "R")


def test_the_summary_reads_the_papers_3x_pix2pix_from_its_members(tmp_path):
    records = []
    for seed in range(3):
        records += [
            _fake_record("p_pix2pix_flair", seed, 20.0 + seed, cases={"a": 20.0, "b": 21.0}),
            _fake_record("t4_pix2pix", seed, 30.0 + seed, cases={"a": 30.0, "b": 31.0}),
            _fake_record("p_pix2pix_t1ce", seed, 25.0, cases={"a": 25.0, "b": 25.0}),
            _fake_record("t2_dygan", seed, 26.0 + seed, cases={"a": 26.0, "b": 27.0}),
        ]
    _write_records(tmp_path, records)
    results = summary.write(str(tmp_path))
    row = results["rows"]["t2_pix2pix3_paper"]["heldout"]
    assert row["t1"]["psnr"]["mean"] == pytest.approx(31.0)
    assert row["flair"]["psnr"]["mean"] == pytest.approx(21.0)
    claim = next(c for c in results["claims"] if c["claim"] == 1 and c["primary"])
    t1 = next(e for e in claim["pairs"] if e["target"] == "t1")["heldout"]
    assert t1["mean"] == pytest.approx(-4.0) and t1["case_bootstrap_ci"] is not None
    flair = next(e for e in claim["pairs"] if e["target"] == "flair")["heldout"]
    assert flair["mean"] == pytest.approx(6.0)
    # The paper's row sums its members' parameters; its T1 is also Table 4's pix2pix.
    assert results["motivation"]["t2_pix2pix3_paper"]["generator_parameters"] == 3
    assert results["rows"]["t4_pix2pix"]["heldout"]["t1"]["psnr"]["mean"] == pytest.approx(31.0)
    text = (tmp_path / summary.RESULTS_MD).read_text()
    assert "1 (compute-matched)" in text and "p (Holm)" in text


def test_v2_summary_reads_each_rows_anatomy_gap_paired_by_seed(tmp_path):
    records = []
    for seed, (mni, colin) in enumerate([(30.0, 27.0), (31.0, 27.5), (29.0, 26.5)]):
        for row in ("t2_dygan", "t2_ms_dygan"):
            record = _fake_record(row, seed, 0.0, "v2")
            record["scores"] = {
                "test_mni": {t: {"psnr": mni} for t in record["targets"]},
                "test_colin27": {t: {"psnr": colin} for t in record["targets"]},
            }
            records.append(record)
    _write_records(tmp_path, records)
    results = summary.write(str(tmp_path))
    assert results["anatomy_shift"] == ["test_mni", "test_colin27"]
    gaps = [g for g in results["anatomy_gap"] if g["row"] == "t2_dygan"]
    assert [g["target"] for g in gaps] == ["flair", "t1", "t1ce"]
    # colin27 - mni per seed: -3.0, -3.5, -2.5: mean -3.0, SD 0.5, t(2) 4.3027 x 0.5 / sqrt 3
    assert gaps[0]["n"] == 3 and gaps[0]["mean"] == pytest.approx(-3.0)
    assert gaps[0]["half_width"] == pytest.approx(4.302653 * 0.5 / np.sqrt(3), rel=1e-5)
    text = (tmp_path / summary.RESULTS_MD).read_text()
    label = tables.ROW_BY_ID["t2_dygan"].label
    half = gaps[0]["half_width"]
    line = f"| {label} | FLAIR | 3 | -3.00 [{-3 - half:+.2f}, {-3 + half:+.2f}] |"
    assert "`test_colin27` − `test_mni`" in text and line in text
    # Table 3 was not run on v2: its λ = 100 row (Ms_DyGAN's runs) alone is no table
    assert "## Table 2" in text and "## Table 3" not in text
    # v1's test sets share one anatomy: no gap table
    assert summary.anatomy_gap({}, tables.BENCHMARKS["v1"]) == []


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
    from dygan_tf.run_folder import files as run_files

    out = tmp_path / "pix2pix_t1"
    argv = ["--data", tfrecord_dir, "--out", out, "--preset", "tiny", "--dyconv", "none"]
    argv += ["--targets", "t1", "--discriminator", "patch", "--d-dyconv", "off"]
    result = run_in_process(fit.main, *argv, "--epochs", "1", "--steps-per-epoch", "1")
    assert result.returncode == 0, result.stderr
    config = run_files.read_config(out)
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
