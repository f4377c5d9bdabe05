"""Test setup: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests, and
the session fixtures (a small phantom, its shards, a tiny run folder and its export, and
the small trained `fit` runs that the fit, evaluate and distribute tests share). The
phantom and its shards are built once for both pytest-xdist workers.

The CPU must be split before TensorFlow initialises its devices, so it happens in
pytest_configure, before any test module is collected or builds a tensor.
"""

import contextlib
import fcntl
import io
import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread for TensorFlow's intra-op pool, in the two pytest-xdist workers and in the
# commands the tests start: two workers on two cores already keep both busy, and two
# pools of two threads each only contend (their idle threads spin before they sleep).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# XLA's CPU compiles (the GPU benchmark's smoke run: the suite's XLA train steps) with less
# LLVM optimisation and XLA's loop emitters for fusions instead of its newer fusion
# emitters: the same HLO, compiled in half the default time (a tiny DyGAN train step, CPU
# seconds to the first step: 26.3 with no flags, 20.8 with the first two, 13.4 with all
# three); what runs differs from the default build only in float rounding, and no test
# pins XLA's numbers.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false",
)

import pytest  # noqa: E402

from tests import helpers  # noqa: E402


def pytest_configure(config):
    if config.getoption("numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        return  # the pytest-xdist controller runs no test: no TensorFlow start-up there
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )


# The suite runs on two pytest-xdist workers (pytest.ini: `-n 2 --dist loadgroup`): much
# of a test's time is single-threaded Python (tracing a train step), so two processes
# keep both cores busy. Each worker builds the session fixtures it needs; the tests that
# share a module fixture stay on one worker, as do all users of the trained `fit_runs`,
# so each of those is built once.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "fit_runs" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("fit_runs"))
        elif any(
            fixture.scope == "module"
            for name in item.fixturenames
            for fixture in item._fixtureinfo.name2fixturedefs.get(name, ())
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


def _built_once(tmp_path_factory, name, build):
    """`build(folder)` run once per test session, for every pytest-xdist worker: the
    first worker to get here builds it under a lock, the others wait and reuse it
    (read-only: tests that change data copy it first)."""
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent  # the session's folder, above each worker's own
    folder, done = base / name, base / f"{name}.done"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A BraTS-layout phantom of PHANTOM_HGG + PHANTOM_LGG cases."""
    from dygan_tf.data import phantom

    def build(root):
        phantom.build_phantom(
            str(root), helpers.PHANTOM_HGG, helpers.PHANTOM_LGG, seed=0, workers=2, verbose=False
        )

    return _built_once(tmp_path_factory, "phantom", build)


@pytest.fixture(scope="session")
def tfrecord_dir(phantom_root, tmp_path_factory):
    """The phantom's TFRecord shards (64 px, 2 shards per split)."""
    from dygan_tf.data import shards

    def build(out):
        shards.build(str(phantom_root), str(out), **helpers.BUILD_ARGS)

    return _built_once(tmp_path_factory, "records", build)


@pytest.fixture(scope="session")
def fit_runs(tfrecord_dir, tmp_path_factory):
    """helpers.FIT_RUNS trained once each through `fit.main`: name -> FitRun."""
    from dygan_tf import fit

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name, (flags, epochs) in helpers.FIT_RUNS.items():
        out = str(root / name)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            fit.main(
                ["--data", str(tfrecord_dir), "--out", out, "--preset", "tiny"]
                + ["--epochs", str(epochs), "--steps-per-epoch", str(helpers.FIT_STEPS), *flags]
            )
        runs[name] = helpers.FitRun(out, printed.getvalue())
    return runs


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A folder as `fit` leaves it: config.json and generator.keras (tiny, random weights)."""
    from dygan_tf.config.run_config import get_preset

    return helpers.save_untrained_run(tmp_path_factory.mktemp("run"), get_preset("tiny"))


@pytest.fixture(scope="session")
def tiny_generator(run_dir):
    """(RunConfig, generator) loaded from `run_dir`."""
    from dygan_tf.run_folder.files import load_run

    return load_run(str(run_dir))


@pytest.fixture(scope="session")
def export_command(run_dir, tmp_path_factory):
    """(out, CompletedProcess): `dygan_tf.export --run run_dir --out .../dygan/1`, run
    in-process; test_export.py checks what it left, the translate tests serve it."""
    from dygan_tf import export

    out = tmp_path_factory.mktemp("saved_models") / "dygan" / "1"
    return out, helpers.run_in_process(export.main, "--run", run_dir, "--out", out)


@pytest.fixture(scope="session")
def savedmodel_dir(export_command):
    """`saved_models/dygan/1` exported from `run_dir` by the export command."""
    out, result = export_command
    assert result.returncode == 0, result.stderr
    return str(out)
