"""benchmarks.profile_step: op names sorted into the table's categories, and one traced
step of the tiny preset end to end."""

import glob
import json

import pytest

from benchmarks import profile_step
from tests.helpers import REPO

KINDS = {
    "G": {"up0_1_conv": "dyconv", "up0_1_norm": "norm", "down0_1_conv": "conv"},
    "D": {"trunk2_conv": "dyconv", "trunk2_norm": "norm"},
}


@pytest.mark.parametrize(
    "name,op_type,expected",
    [
        ("SPC/generator_1/up0_1_conv_1/conv/Conv2D", "_MklNativeConv2D", ("G", "dyconv_forward")),
        (
            "SPC/generator_1/up0_1_conv_1/conv/input_grad/Conv2D",
            "Conv2D",
            ("G", "dyconv_input_grad"),
        ),
        (
            "SPC/generator_1/up0_1_conv_1/conv/kernel_grad/Conv2D",
            "Conv2D",
            ("G", "dyconv_kernel_grad"),
        ),
        (
            "SPC/gradient_tape/discriminator_1/trunk2_conv_1/conv/Conv2DBackpropFilter",
            "_MklNativeConv2DBackpropFilter",
            ("D", "dyconv_kernel_grad"),
        ),
        (
            "SPC/PartitionedCall_1/gradients/generator_1/up0_1_conv_1/conv/map/while_grad/Conv2D_grad/Conv2DBackpropInput",
            "Conv2DBackpropInput",
            ("G", "dyconv_input_grad"),
        ),
        (
            "SPC/gradient_tape/discriminator_1/trunk2_conv_1/conv/MatMul/MatMul_1",
            "BatchMatMulV2",
            ("D", "dyconv_input_grad"),
        ),
        ("SPC/discriminator_1/trunk2_conv_1/mixing/MatMul", "MatMul", ("D", "kernel_mixing")),
        (
            "SPC/gradient_tape/discriminator_1/trunk2_conv_1/mixing/MatMul_1",
            "MatMul",
            ("D", "kernel_mixing"),
        ),
        (
            "SPC/discriminator_1/trunk2_conv_1/conv/expert_mix/einsum",
            "Einsum",
            ("D", "kernel_mixing"),
        ),
        ("SPC/generator_1/up0_1_norm_1/moments/mean", "Mean", ("G", "instance_norm")),
        (
            "SPC/gradient_tape/generator_1/down0_1_conv_1/Conv2DBackpropInput",
            "X",
            ("G", "static_conv"),
        ),
        ("SPC/generator_1/up0_upsample_1/resize", "ResizeNearestNeighbor", ("G", "other")),
        ("SPC/g_optimizer/Mul_3", "Mul", ("step", "optimizer")),
        ("SPC/Mean_2", "Mean", ("step", "other")),
    ],
)
def test_ops_are_sorted_into_the_table_categories(name, op_type, expected):
    assert profile_step.classify(name, op_type, KINDS) == expected


def test_profile_tiny_writes_the_table_and_a_tensorboard_trace(tmp_path, capsys):
    out = tmp_path / "profile"
    argv = ["--preset", "tiny", "--steps", "1", "--warmup", "1", "--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        profile_step.run_main(profile_step.main, argv)
    assert exit_info.value.code == 0
    result = json.loads((out / "profile.json").read_text())
    assert glob.glob(str(out / "logs" / "**" / "*.xplane.pb"), recursive=True)
    table = result["op_ms_per_step"]
    for group in ("G", "D"):
        assert set(table[group]) == set(profile_step.CATEGORIES) | {"total"}
        assert table[group]["dyconv_forward"] > 0 and table[group]["kernel_mixing"] > 0
        assert table[group]["total"] > 0
    assert table["G"]["instance_norm"] > 0 and table["step"]["optimizer"] > 0
    assert result["wall_ms_per_step"] > 0 and result["model"] == "dygan"
    assert "| G |" in (out / "profile.md").read_text()
    assert "TensorBoard" in capsys.readouterr().out


@pytest.mark.slow
def test_the_jax_step_profile_times_every_variant_and_the_static_convolutions(tmp_path):
    pytest.importorskip("jax")
    import json
    import subprocess
    import sys

    out = tmp_path / "jax"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.profile_step",
            "--backend",
            "jax",
            "--preset",
            "tiny",
            "--rounds",
            "1",
            "--steps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "jax_variants.json").read_text())
    assert record["machine"]["backend"] == "jax"
    assert set(record["steps"]) == {
        "measured (as fit)",
        "measured, no donation",
        "loop everywhere (CPU default)",
        "TensorFlow's table",
        "pix2pix",
    }
    assert all(row["step_seconds_median"] > 0 for row in record["steps"].values())
    assert record["static_conv_ms"] and all(
        row["jax"] > 0 and row["tensorflow"] > 0 for row in record["static_conv_ms"]
    )
