"""Files written by release 0.1.0, before the package was split into subpackages
(tests/data/release_0_1_0, made by the commands in its README.md): its generator.keras,
run folder and SavedModel still load, resume, evaluate and export."""

import csv
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import dygan_tf  # noqa: F401 (registers the Keras objects, as a user's import does)
from dygan_tf import evaluate, export, fit
from dygan_tf.inference.predictor import load_predictor
from dygan_tf.run_folder import checkpoints
from dygan_tf.run_folder import files as run_files
from dygan_tf.training.run import open_run
from dygan_tf.utils.errors import UserError
from tests.helpers import REPO, run_in_process

pytestmark = pytest.mark.slow

RELEASE = os.path.join(REPO, "tests", "data", "release_0_1_0")
# The references were computed on a 2-core AVX2 EPYC. Another CPU's kernels round
# float32 differently: on an Intel AVX-512 CPU with oneDNN, 2 of the 3072 outputs differ
# by 1.04e-5. Same-machine comparisons below stay exact (atol=0).
ACROSS_CPUS = 5e-5
SHARDS = os.path.join(RELEASE, "shards")


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(RELEASE, "reference.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def run_copy(tmp_path):
    """The release's run folder, copied: resuming writes into it."""
    return shutil.copytree(os.path.join(RELEASE, "run_tiny"), tmp_path / "run_tiny")


def _inputs(reference):
    return {"image": reference["image"], "task": reference["task"]}


def test_generator_keras_loads_and_gives_the_release_outputs(reference):
    generator = keras.saving.load_model(os.path.join(RELEASE, "run_tiny", "generator.keras"))
    out = np.asarray(generator(_inputs(reference)))
    np.testing.assert_allclose(out, reference["generator"], rtol=0, atol=ACROSS_CPUS)
    config, loaded = run_files.load_run(os.path.join(RELEASE, "run_tiny"))
    assert config.model.image_size == 32 and config.model.discriminator == "patch"
    np.testing.assert_allclose(np.asarray(loaded(_inputs(reference))), out, rtol=0, atol=0)


def test_savedmodel_serves_and_loads_as_a_predictor(reference):
    saved = tf.saved_model.load(os.path.join(RELEASE, "savedmodel"))
    served = saved.signatures["serving_default"](
        image=tf.constant(reference["image"]), task=tf.constant(reference["task"])
    )["synthesized"].numpy()
    np.testing.assert_allclose(served, reference["savedmodel"], rtol=0, atol=ACROSS_CPUS)
    predictor = load_predictor(os.path.join(RELEASE, "savedmodel"))
    assert predictor.image_size == 32


def test_checkpoints_restore_the_release_weights(run_copy):
    """The last checkpoint (epoch 2, also the best, so generator.keras) restores into the
    networks built by today's code, variable for variable."""
    config = run_files.read_config(str(run_copy))
    state = open_run(config, SHARDS, str(run_copy), tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert state.start == 2 and len(state.history) == 2
    saved = keras.saving.load_model(os.path.join(run_copy, "generator.keras"))
    for got, want in zip(state.gan.generator.weights, saved.weights):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)
    assert int(state.gan.g_optimizer.iterations.numpy()) == 4  # 2 epochs x 2 steps


def test_a_release_checkpoint_on_another_backend_is_one_line(run_copy, monkeypatch):
    """Reading an earlier release's TensorFlow checkpoint needs TensorFlow's object
    graph: on JAX or PyTorch the run is refused with one line that says how to go on,
    and nothing is assigned."""
    from dygan_tf.utils import backend

    monkeypatch.setattr(backend, "is_tensorflow", lambda: False)
    holder = keras.Variable(np.zeros(2, "float32"))
    checkpoint = checkpoints.Checkpoint(net=type("Net", (), {"variables": [holder]})())
    prefix = checkpoints.latest(run_files.checkpoint_dir(run_copy))
    with pytest.raises(UserError) as caught:
        checkpoints.restore_last(checkpoint, str(run_copy), run_files.read_history(run_copy))
    assert str(caught.value).startswith(f"{prefix}: a TensorFlow checkpoint of an earlier ")
    assert "KERAS_BACKEND=tensorflow" in str(caught.value)
    assert int(checkpoint.epoch.numpy()) == 0 and not np.asarray(holder).any()


def test_the_run_resumes_evaluates_and_exports(run_copy, tmp_path, reference):
    out = run_in_process(
        fit.main,
        *("--data", SHARDS, "--out", run_copy, "--preset", "tiny", "--image-size", "32"),
        *("--discriminator", "patch", "--epochs", "3", "--steps-per-epoch", "2"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming at epoch 3" in out.stdout
    with open(os.path.join(run_copy, "history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(RELEASE, "run_tiny", "history.csv"), newline="") as f:
        before = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[:2] == before
    # The next checkpoint is in the one format; the release's ckpt-2 stays to fall back
    # on, its ckpt-1 goes (two kept).
    last = run_files.checkpoint_dir(run_copy)
    assert sorted(checkpoints.checkpoints_in(last)) == [2, 3]
    assert os.path.isfile(os.path.join(last, "ckpt-3.npz"))
    assert checkpoints.is_tensorflow(os.path.join(last, "ckpt-2"))
    assert not [n for n in os.listdir(last) if n.startswith("ckpt-1")]
    # Opened again, it resumes from the new file.
    config = run_files.read_config(str(run_copy))
    state = open_run(config, SHARDS, str(run_copy), tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert state.start == 3 and int(state.gan.g_optimizer.iterations.numpy()) == 6

    report = tmp_path / "eval"
    result = run_in_process(evaluate.main, "--run", run_copy, "--data", SHARDS, "--out", report)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (report / "report.json").is_file() and (report / "report.md").is_file()

    # The release's run as it was (not resumed) exports to the release's SavedModel.
    saved = tmp_path / "saved" / "1"
    result = run_in_process(export.main, "--run", os.path.join(RELEASE, "run_tiny"), "--out", saved)
    assert result.returncode == 0, result.stderr[-3000:]
    served = (
        tf.saved_model.load(str(saved))
        .signatures["serving_default"](
            image=tf.constant(reference["image"]), task=tf.constant(reference["task"])
        )["synthesized"]
        .numpy()
    )
    np.testing.assert_allclose(served, reference["savedmodel"], rtol=0, atol=ACROSS_CPUS)
