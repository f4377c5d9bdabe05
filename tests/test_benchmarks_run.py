"""Smoke tests of `python -m benchmarks.run`: every section at tiny sizes, the JSON schema,
a failing section, bad flags, the FLOP count against a hand computation, the targets in
one place; and of the one train-step benchmark it calls (benchmarks.backend_step): its
GPU profile through `run --gpu`, and `--against` a git revision."""

import json
import math
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf

from benchmarks import run as bench_run
from benchmarks.common import TARGETS, forward_macs, step_flops, verdict
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.utils import cpu
from dygan_tf.utils.cli import run_main
from tests.helpers import REPO

SECTIONS = (
    "machine",
    "matmul_peak",
    "dyconv_vs_conv",
    "train_step_vs_pix2pix",
    "prep_vs_load",
    "pipeline",
    "inference",
    "gpu",
)


def _numbers(value, path=""):
    """(path, number) for every int or float in a nested dict/list, booleans excluded."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def _positive(*values):
    for value in values:
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, value


@pytest.mark.slow
def test_run_tiny_writes_every_section(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert bench_run.main(["--tiny", "--out", str(out), "--work-dir", str(tmp_path)]) == 0
    results = json.loads(out.read_text())
    assert results["profile"] == "tiny" and set(SECTIONS) <= set(results)
    for path, number in _numbers(results):
        assert math.isfinite(number) and number >= 0, path
    for name in SECTIONS[:-1]:
        assert "error" not in results[name], results[name]
        _positive(results[name]["seconds"])
    assert results["gpu"] == {"skipped": "no GPU"}

    m = results["machine"]  # benchmarks.common.machine(): the CPU as dygan_tf.utils.cpu sees it
    assert m["cpu_kind"] == cpu.cpu_kind() and m["cpus"] >= 1 and m["affinity_cores"] >= 1
    assert m["cpu_model"] == cpu.cpu_model()
    assert m["cpu_flags"] == sorted(
        f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma"))
    )
    assert m["device"] == "cpu" and m["device_name"] == "cpu"
    assert m["backend"] == "tensorflow" and m["library_version"] == tf.__version__
    assert m["keras"] and m["numpy"] and "enabled" in m["onednn"]

    peak = results["matmul_peak"]
    _positive(peak["float32"]["gflops_per_s"], peak["bfloat16"]["gflops_per_s"])
    assert peak["n"] == 128  # the tiny profile's

    dy = results["dyconv_vs_conv"]
    assert len(dy["shapes"]) == 1 and dy["target"] == 1.15 and isinstance(dy["met"], bool)
    _positive(dy["geometric_mean_ratio"])

    train = results["train_step_vs_pix2pix"]
    for key in ("float32", "mixed_bfloat16"):
        pair = train[key]
        assert pair["target"] == 0.8 and isinstance(pair["met"], bool)  # issue 12's target
        assert pair["stretch"] == 0.9 and pair["stretch_met"] == (pair["flop_rate_ratio"] >= 0.9)
        assert pair["met"] == (pair["flop_rate_ratio"] >= 0.8)
        _positive(pair["flop_rate_ratio"], pair["step_time_ratio"])
        # The matmul peak is the matmul_peak section's, measured once for the whole run.
        dtype = pair["matmul_peak_dtype"]
        assert pair["matmul_peak_gflops_per_s"] == {dtype: peak[dtype]["gflops_per_s"]}
        for name in ("dygan", "pix2pix"):
            step = pair[name]
            assert step["preset"] == "tiny" and step["losses_finite"]
            _positive(
                step["step_seconds_median"],
                step["flops"]["per_step"],
                step["achieved_gflops_per_s"],
                step["fraction_of_matmul_peak"],
            )
        assert pair["dygan"]["dyconv"] == "up" and pair["pix2pix"]["dyconv"] == "none"
        assert pair["pix2pix"]["discriminator"] == "patch" and not pair["pix2pix"]["d_dyconv"]
        assert pair["dygan"]["flops"]["dyconv_mixing_share"] > 0
        assert pair["pix2pix"]["flops"]["dyconv_mixing_share"] == 0
    assert train["float32"]["dygan"]["mixed_precision"] == "none"
    assert train["mixed_bfloat16"]["dygan"]["mixed_precision"] == "bfloat16"

    data = results["prep_vs_load"]
    assert data["image_size"] == 32 and data["target"] == 0.8 and isinstance(data["met"], bool)
    _positive(data["ratio"], data["tfdata"]["slices_per_s"], data["phantom_seconds"])

    pipe = results["pipeline"]
    assert pipe["target"] == 20 and isinstance(pipe["met"], bool)
    _positive(pipe["tfdata_slices_per_s"], pipe["train_step_slices_per_s"], pipe["ratio"])

    inf = results["inference"]
    assert inf["volume_shape"] == [48, 40, 12]
    _positive(inf["volume"]["slices_per_s"], inf["latency_batch3"]["savedmodel_signature_s"])

    printed = capsys.readouterr().out
    for name in SECTIONS:
        assert name in printed
    assert "skipped: no GPU" in printed


def test_failing_section_is_recorded_and_exits_1(tmp_path, monkeypatch, capsys):
    def broken(sizes, results, work_dir):
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(
        bench_run,
        "SECTIONS",
        (("machine", bench_run.machine_facts), ("inference", broken), ("gpu", bench_run.gpu)),
    )
    out = tmp_path / "results.json"
    assert bench_run.main(["--tiny", "--out", str(out)]) == 1
    results = json.loads(out.read_text())
    assert results["inference"]["error"] == "RuntimeError: deliberately broken"
    assert results["inference"]["seconds"] >= 0 and "cpu_kind" in results["machine"]
    assert results["gpu"] == {"skipped": "no GPU"}
    assert "FAILED: inference" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["--out"], ["--quick", "--tiny", "--out", "x.json"], ["--nope", "--out", "x.json"]]
)
def test_bad_flags_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(bench_run.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: python -m benchmarks.run") and "\n" not in err


def test_flop_count_matches_hand_computation():
    image = keras.Input((8, 8, 2))
    task = keras.Input((12,))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(image)  # 4x4x4 out
    y = DyConv2D(5, 3, num_experts=3, use_bias=True)(x, task)  # 4x4x5 out
    model = keras.Model([image, task], y)
    conv = 4 * 4 * 3 * 3 * 2 * 4 + 4 * 4 * 3 * 3 * 4 * 5
    mixing = 3 * 3 * 3 * 4 * 5 + (4 + 12) * 3 + 3 * 5
    assert forward_macs(model) == {"conv": conv, "mixing": mixing}
    flops = step_flops(model, model, images=3)
    forward = 2 * (conv + mixing)
    assert flops["per_step"] == 3 * (3 * forward + 7 * forward)
    assert flops["generator_forward_per_image"] == forward
    assert flops["dyconv_mixing_share"] == pytest.approx(mixing / (conv + mixing))


def test_the_targets_live_in_one_place_and_every_check_reads_them():
    assert TARGETS == {
        "dyconv_vs_conv": ("<=", 1.15),
        "flop_rate_ratio": (">=", 0.8),
        "flop_rate_stretch": (">=", 0.9),
        "prep_vs_load": (">=", 0.8),
        "pipeline": (">=", 20.0),
    }
    assert verdict("dyconv_vs_conv", 1.15) == {"target": 1.15, "met": True}
    assert verdict("dyconv_vs_conv", 1.16) == {"target": 1.15, "met": False}
    assert verdict("flop_rate_ratio", 0.79) == {"target": 0.8, "met": False}
    assert verdict("pipeline", 20.0) == {"target": 20.0, "met": True}
    # No benchmark module spells a target itself.
    for name in os.listdir(os.path.join(REPO, "benchmarks")):
        if name.endswith(".py") and name != "common.py":
            text = open(os.path.join(REPO, "benchmarks", name), encoding="utf-8").read()
            for spelled in ('"target": 1.15', '"target": 0.8', 'target_ratio": 0.8', ">= 0.8"):
                assert spelled not in text, (name, spelled)


@pytest.mark.slow
def test_gpu_mode_runs_end_to_end_at_tiny_size_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    # A generous budget: at tiny size on a busy CPU the three traced steps (one under
    # XLA, whose CPU compile is slow) are what this checks, not the speed. This is the
    # suite's XLA train-step test too: `jit_compile` is read from the built models.
    assert bench_run.main(["--gpu", "--tiny", "--budget-s", "3600", "--out", str(out)]) == 0
    results = json.loads(out.read_text())  # backend_step's GPU profile record
    assert results["profile"] == "gpu-tiny" and results["preset"] == "tiny"
    assert results["sizes"]["depth"] == 1 and "cpu_kind" in results["machine"]
    assert results["machine"]["device_name"] == "cpu"
    settings = results["machine"]["float32_settings"]
    assert isinstance(settings["tf.config.experimental.tensor_float_32_execution_enabled"], bool)
    peaks = results["matmul_peak_gflops_per_s"]
    _positive(peaks["float32"], peaks["bfloat16"])
    assert set(results["runs"]) == {"float32", "bfloat16", "bfloat16_xla"}
    for key, precision, jit in (
        ("float32", "none", False),
        ("bfloat16", "bfloat16", False),
        ("bfloat16_xla", "bfloat16", True),
    ):
        pair = results["runs"][key]
        assert "error" not in pair, pair
        assert pair["mixed_precision"] == precision and pair["device_memory"] is None  # no GPU
        for name in ("dygan", "pix2pix"):
            step = pair[name]
            assert step["losses_finite"] and step["mixed_precision"] == precision
            assert step["jit_compile"] is jit
            _positive(step["step_seconds_median"], step["source_slices_per_s"])
            _positive(step["brats_epoch_minutes"], step["fraction_of_matmul_peak"])
            minutes = 1400 * step["step_seconds_median"] / 60  # one BraTS epoch
            assert step["brats_epoch_minutes"] == pytest.approx(minutes, rel=1e-2)
            peak = peaks[step["mixed_precision"].replace("none", "float32")]
            assert step["fraction_of_matmul_peak"] == pytest.approx(
                step["achieved_gflops_per_s"] / peak
            )
        _positive(pair["flop_rate_ratio"], pair["step_time_ratio"])
    assert "bfloat16_xla: DyGAN" in capsys.readouterr().out


@pytest.mark.slow
def test_the_step_benchmark_times_today_against_a_git_revision(tmp_path):
    """`backend_step --against REV`: REV's dygan_tf imported beside today's (here HEAD's,
    in a process of its own), both steps timed alternating."""
    out = tmp_path / "versus.json"
    argv = ["--preset", "tiny", "--against", "HEAD", "--rounds", "2", "--steps", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.backend_step", *argv, "--warmup", "1", "--out", out],
        cwd=REPO,
        env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["revision"] == "HEAD" and record["preset"] == "tiny"
    assert record["rounds"] == 2 and record["steps_per_round"] == 1
    assert set(record["step_seconds_median"]) == {"revision", "today"}
    _positive(*record["step_seconds_median"].values(), record["ratio_today_over_revision"])
    assert len(record["ratio_per_round"]) == 2 and record["machine"]["backend"] == "tensorflow"
    assert "today" in result.stdout and "vs HEAD" in result.stdout


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is present")
def test_gpu_mode_without_a_gpu_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(bench_run.main, ["--gpu", "--out", "x.json"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--gpu: TensorFlow sees no GPU" in err and "\n" not in err
