"""dygan_tf.utils.cpu: the CPU kind from its flags, and oneDNN set per kind before
TensorFlow starts, a user's own TF_ENABLE_ONEDNN_OPTS winning."""

import os
import subprocess
import sys

import pytest

from dygan_tf.utils import cpu
from tests.helpers import REPO

AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}
AVX512 = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_bf16"}


@pytest.mark.parametrize(
    "flags, machine, kind",
    [
        (AVX2, "x86_64", "avx2"),
        (AVX512, "x86_64", "avx512"),
        (AMX, "x86_64", "amx"),
        ({"sse4_2"}, "x86_64", "other"),
        ({"fp", "asimd"}, "aarch64", "other"),
    ],
)
def test_cpu_kind_from_flags(flags, machine, kind):
    assert cpu.cpu_kind(flags, machine) == kind


def test_cpu_flags_read_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu avx2 fma\n\nprocessor : 1\nflags : fpu\n")
    assert cpu.cpu_flags(str(info)) == {"fpu", "avx2", "fma"}
    assert cpu.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_cpu_model_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor : 0\nmodel name : AMD EPYC 9R14 96-Core Processor\nflags : avx2\n\n"
        "processor : 1\nmodel name : other\n"
    )
    assert cpu.cpu_model(str(info)) == "AMD EPYC 9R14 96-Core Processor"
    arm = tmp_path / "arm"
    arm.write_text("processor : 0\nFeatures : fp asimd\n\nModel : Raspberry Pi 4 Model B\n")
    assert cpu.cpu_model(str(arm)) == "Raspberry Pi 4 Model B"


@pytest.mark.parametrize("kind", ["avx2", "avx512"])
def test_measured_kinds_get_onednn_on(kind):
    env = {}
    described = cpu.configure_onednn(env, kind, tensorflow_loaded=False)
    assert env[cpu.ONEDNN_VARIABLE] == "1"
    assert described["enabled"] and described["source"] == "dygan_tf (per CPU kind)"


def test_unmeasured_kinds_keep_tensorflows_default():
    env = {}
    described = cpu.configure_onednn(env, "amx", tensorflow_loaded=False)
    assert cpu.ONEDNN_VARIABLE not in env
    assert described["source"].startswith("tensorflow default")


@pytest.mark.parametrize("value", ["0", "1"])
def test_the_users_setting_wins(value):
    env = {cpu.ONEDNN_VARIABLE: value}
    described = cpu.configure_onednn(env, "avx2", tensorflow_loaded=False)
    assert env == {cpu.ONEDNN_VARIABLE: value}
    assert described["source"] == "user" and described["enabled"] is (value == "1")


def test_too_late_once_tensorflow_is_loaded():
    env = {}
    described = cpu.configure_onednn(env, "avx2", tensorflow_loaded=True)
    assert env == {} and "TensorFlow was loaded first" in described["source"]


_REPORT = (
    "import os, dygan_tf, tensorflow\n"
    "from dygan_tf.utils import cpu\n"
    "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), cpu.describe_onednn()['source'])\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("users", [None, "0"])
def test_import_dygan_tf_sets_it_before_tensorflow(users):
    """In a fresh process, `import dygan_tf` decides before TensorFlow is imported; a
    user's 0 stays 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_ENABLE_ONEDNN", "_DYGAN"))}
    if users is not None:
        env[cpu.ONEDNN_VARIABLE] = users
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", _REPORT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    value, source = result.stdout.strip().split(" ", 1)
    expected = cpu.ONEDNN_BY_KIND.get(cpu.cpu_kind())
    if users is not None:
        assert (value, source) == (users, "user")
    elif expected is not None:
        assert (value, source) == (expected, "dygan_tf (per CPU kind)")
    else:
        assert value == "None" and source.startswith("tensorflow default")
