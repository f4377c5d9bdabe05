"""DyGAN on JAX and PyTorch: the same losses and gradients as TensorFlow, without
TensorFlow installed; JAX runs end to end.

The JAX and PyTorch runs are subprocesses (the Keras backend is chosen once per
process); the TensorFlow side runs here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dygan_tf.config.run_config import get_preset
from dygan_tf.config.tasks import task_code
from tests.helpers import REPO

pytest.importorskip("jax")


def _jax_env(backend="jax", **extra):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _run_jax(module, *args, env=None, timeout=900):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=env or _jax_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _batch(size, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (3, size, size, 1)).astype("float32")
    target = np.tanh(image * 1.5 + rng.normal(0, 0.1, image.shape)).astype("float32")
    task = np.stack([task_code("t1", t) for t in ("t2", "t1ce", "flair")]).astype("float32")
    return image, target, task


def _tensorflow_side(config, path):
    """Builds `config` on TensorFlow, writes its weights, a batch and TF's losses and
    gradients (`dygan_tf.models.steps.tensorflow_gradients`) to `path`; returns that dict."""
    import keras

    from dygan_tf.models import steps
    from dygan_tf.models.builders import build_dygan

    keras.utils.set_random_seed(3)
    gan = build_dygan(config)
    image, target, task = _batch(config.model.image_size)
    losses, g_grads, d_grads = steps.tensorflow_gradients(gan, (image, target, task))
    g_weights, d_weights = gan.generator.get_weights(), gan.discriminator.get_weights()
    record = {"config": json.dumps(config.to_dict()), "image": image, "target": target}
    record.update(task=task, g_count=len(g_weights), d_count=len(d_weights))
    record.update({f"g_weight_{i}": w for i, w in enumerate(g_weights)})
    record.update({f"d_weight_{i}": w for i, w in enumerate(d_weights)})
    np.savez(path, **record)
    record.update({f"loss_{k}": np.asarray(v) for k, v in losses.items()})
    record.update(g_grads=len(g_grads), d_grads=len(d_grads))
    record.update({f"g_grad_{i}": np.asarray(g) for i, g in enumerate(g_grads)})
    record.update({f"d_grad_{i}": np.asarray(g) for i, g in enumerate(d_grads)})
    return record


def _assert_same_gradients(tf_record, jax_record, prefix, count):
    expected = [tf_record[f"{prefix}_{i}"] for i in range(count)]
    got = [jax_record[f"{prefix}_{i}"] for i in range(count)]
    # Float32 rounding of the network's largest terms: a gradient that cancels to ~0
    # (the routing of a DyConv before instance norm: 1e-8 where others are 1e-1) is that
    # noise on both backends, and agrees only to it.
    floor = 1e-6 * max(float(np.max(np.abs(e))) for e in expected)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert e.shape == g.shape
        # Otherwise relative to the weight's own gradient, not the network's.
        tolerance = 2e-4 * float(np.max(np.abs(e))) + floor
        np.testing.assert_allclose(g, e, rtol=0, atol=tolerance, err_msg=f"{prefix}_{i}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize(
    "preset, changes",
    [
        ("tiny", {}),  # the multi-scale D (dense_map heads), DyConv in G's up half
        # No norm: every routing gradient is large, so each is checked on its own scale.
        (
            "tiny",
            {
                "discriminator": "patch",
                "dyconv": "both",
                "image_size": 32,
                "ema": 0.9,
                "norm": "none",
            },
        ),
    ],
    ids=["multiscale", "patch_both_ema_no_norm"],
)
def test_losses_and_gradients_equal_tensorflow_without_tensorflow(
    tmp_path, backend, preset, changes
):
    if backend == "torch":
        pytest.importorskip("torch")
    config = get_preset(preset).override(**changes)
    tf_record = _tensorflow_side(config, tmp_path / "tf.npz")
    _run_jax(
        "tests.backend.gradients",
        tmp_path / "tf.npz",
        tmp_path / "out.npz",
        "--no-tensorflow",
        env=_jax_env(backend),
    )
    jax_record = np.load(tmp_path / "out.npz")
    assert not bool(jax_record["tensorflow_loaded"])
    for name in ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss"):
        np.testing.assert_allclose(jax_record[f"loss_{name}"], tf_record[f"loss_{name}"], rtol=2e-6)
    _assert_same_gradients(tf_record, jax_record, "g_grad", tf_record["g_grads"])
    _assert_same_gradients(tf_record, jax_record, "d_grad", tf_record["d_grads"])


def _fit_jax(tfrecord_dir, out, epochs, *flags, backend="jax"):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-m", "dygan_tf.fit", "--backend", backend, "--data", str(tfrecord_dir)]
        + ["--out", str(out), "--preset", "tiny", "--discriminator", "patch"]
        + ["--steps-per-epoch", "2", "--epochs", str(epochs), *flags],
        cwd=REPO,
        # One DyConv methods' cache for the test's runs (the same machine's, as a resume
        # reads), not the user's ~/.cache/dygan_tf: runs that picked other methods would
        # round differently.
        env=dict(
            env, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", DYGAN_CACHE_DIR=str(out.parent / "cache")
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_jax_fit_resumes_bit_for_bit_and_exports_the_same_savedmodel(tfrecord_dir, tmp_path):
    import keras

    from dygan_tf import export
    from dygan_tf.run_folder import checkpoints
    from dygan_tf.run_folder import files as run_files
    from tests.helpers import run_in_process, serve_alone, t2_task_batch

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _fit_jax(tfrecord_dir, straight, 2)
    _fit_jax(tfrecord_dir, resumed, 1)
    assert "resuming at epoch 2" in _fit_jax(tfrecord_dir, resumed, 2).stdout
    # The run folder's checkpoints are .npz, as on every backend, and the resumed run
    # is the straight one, bit for bit: history and every array.
    assert (straight / "history.csv").read_text() == (resumed / "history.csv").read_text()
    last = run_files.checkpoint_dir(straight)
    assert sorted(checkpoints.checkpoints_in(last)) == [1, 2]
    with (
        np.load(f"{last}/ckpt-2.npz") as a,
        np.load(f"{run_files.checkpoint_dir(resumed)}/ckpt-2.npz") as b,
    ):
        assert a.files == b.files and len(a.files) > 10
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    # generator.keras written on JAX: TensorFlow loads it, exports it, and the served
    # SavedModel gives JAX's outputs (float rounding of two backends' kernels).
    image, _, task = t2_task_batch(1, 64)
    np.savez(tmp_path / "batch.npz", image=image, task=task)
    _run_jax(
        "tests.backend.jax_predict",
        straight / "generator.keras",
        tmp_path / "batch.npz",
        tmp_path / "jax.npy",
    )
    on_jax = np.load(tmp_path / "jax.npy")
    on_tf = keras.ops.convert_to_numpy(
        run_files.load_generator(straight / "generator.keras")({"image": image, "task": task})
    )
    _assert_same_outputs(on_tf, on_jax)
    result = run_in_process(export.main, "--run", straight, "--out", tmp_path / "sm" / "1")
    assert result.returncode == 0, result.stderr
    served = serve_alone(tmp_path / "sm" / "1", tmp_path, image=image, task=task)
    _assert_same_outputs(served, on_jax)


def _assert_same_outputs(got, expected):
    """Two backends' float32 kernels on one generator: every voxel within 2e-5 plus 1e-4
    of its value (a U-Net's rounding; since the DyConv experts start apart, one voxel of
    12288 measured 2.01e-5 off at -0.275 on an AMX Xeon), and the voxels on average
    within 5e-6 (measured 1.2e-6 there)."""
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5)
    assert float(np.mean(np.abs(got - expected))) <= 5e-6


@pytest.mark.slow
def test_torch_fit_trains_and_resumes_bit_for_bit(tfrecord_dir, tmp_path):
    pytest.importorskip("torch")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _fit_jax(tfrecord_dir, straight, 2, backend="torch")
    _fit_jax(tfrecord_dir, resumed, 1, backend="torch")
    assert "resuming at epoch 2" in _fit_jax(tfrecord_dir, resumed, 2, backend="torch").stdout
    assert (straight / "history.csv").read_text() == (resumed / "history.csv").read_text()
    assert (straight / "generator.keras").is_file()


def test_a_truncated_npz_checkpoint_is_passed_over_with_a_note(tmp_path, capsys):
    from dygan_tf.run_folder import checkpoints
    from dygan_tf.run_folder import files as run_files

    class Holder:
        def __init__(self, *values):
            import keras

            self.variables = [keras.Variable(np.asarray(v, "float32")) for v in values]

    net = Holder([1.0, 2.0], [[3.0]])
    checkpoint = checkpoints.Checkpoint(net=net)
    manager = checkpoints.CheckpointManager(checkpoint, run_files.checkpoint_dir(tmp_path), 2)
    for epoch in (1, 2, 3):
        checkpoint.epoch.assign(epoch)
        net.variables[0].assign([float(epoch), 0.0])
        manager.save(epoch)
    assert sorted(checkpoints.checkpoints_in(manager.directory)) == [2, 3]  # keeps 2
    newest = f"{manager.directory}/ckpt-3.npz"
    with open(newest, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    assert checkpoints.problem(newest[: -len(".npz")]) is not None
    restored = checkpoints.Checkpoint(net=Holder([0.0, 0.0], [[0.0]]))
    history = [{"epoch": "1"}, {"epoch": "2"}, {"epoch": "3"}]
    prefix = checkpoints.restore_last(restored, tmp_path, history)
    assert prefix.endswith("ckpt-2") and int(restored.epoch.numpy()) == 2
    np.testing.assert_array_equal(restored.objects["net"].variables[0].numpy(), [2.0, 0.0])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note:") and "ckpt-3 (BadZipFile" in err[0]
    # Another model's checkpoint is one line, nothing assigned.
    other = checkpoints.Checkpoint(net=Holder([0.0], [[0.0]]))
    with pytest.raises(Exception, match="holds the weights of another model"):
        other.restore(prefix)


@pytest.mark.slow
def test_jax_data_parallel_on_two_host_devices_equals_one_device(tmp_path):
    _run_jax("tests.backend.jax_data_parallel", tmp_path / "runs.json")
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs["replicated_on"] == 2
    for name in ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss"):
        np.testing.assert_allclose(runs["data_parallel"][name], runs["one_device"][name], rtol=1e-5)


_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.modules["tensorflow"] = None  # as on a machine where it is not installed
sys.argv = ["benchmarks.backend_step", *sys.argv[1:]]
runpy.run_module("benchmarks.backend_step", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_the_backend_benchmark_runs_on_jax_without_tensorflow(tmp_path):
    out = tmp_path / "step.json"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, "--backend", "jax", "--preset", "tiny"]
        + ["--rounds", "1", "--steps", "2", "--out", str(out)],
        cwd=REPO,
        env=_jax_env(DYGAN_CACHE_DIR=str(tmp_path / "cache")),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    record = json.loads(out.read_text())
    assert record["machine"]["backend"] == "jax" and record["machine"]["device"] == "cpu"
    for name in ("dygan", "pix2pix"):
        assert record[name]["losses_finite"] and record[name]["step_seconds_median"] > 0
        assert 0 < record[name]["fraction_of_matmul_peak"]
    assert record["flop_rate_ratio"] > 0
    sources = {c["source"] for c in record["dygan"]["dyconv_methods"].values()}
    from dygan_tf.utils.method_cache import SOURCES

    assert sources <= {*SOURCES, "dense_map rule"} and "measured" in sources, sources
    assert "FLOP-rate ratio" in result.stdout


# 50 steps through the command's training function, across an epoch boundary (the
# learning-rate step, the per-epoch callbacks, a fresh epoch of the data stream).
TRAJECTORY = ("--preset", "tiny", "--discriminator", "patch", "--epochs", "2")
TRAJECTORY_STEPS = 25


def _trajectory(backend, tfrecord_dir, tmp_path, weights, *flags, extra_env=None):
    out = tmp_path / f"{backend}{''.join(flags)}.npz"
    args = [tfrecord_dir, tmp_path / f"run_{out.stem}", weights, out, *TRAJECTORY]
    args += ["--steps-per-epoch", TRAJECTORY_STEPS, *flags]
    # One DyConv methods' cache for the test's runs, not the user's.
    env = _jax_env(backend, DYGAN_CACHE_DIR=str(tmp_path / "cache"), **(extra_env or {}))
    _run_jax("tests.backend.trajectory", *args, env=env)
    with np.load(out) as saved:
        return dict(saved)


def _assert_follows(reference, other, start, what, update_rtol=1e-2, weights_rtol=1e-3):
    g, d = reference["losses"][:, 0], reference["losses"][:, 1]
    assert len(other["losses"]) == len(g) == 2 * TRAJECTORY_STEPS, what
    # Per step: G's loss to 1e-3 relative, D's to 5e-2 (float32 drift of two kernels'
    # rounding through 50 Adam steps, measured ~1e-3).
    np.testing.assert_allclose(other["losses"][:, 0], g, rtol=1e-3, err_msg=f"{what}: g_loss")
    np.testing.assert_allclose(other["losses"][:, 1], d, rtol=5e-2, err_msg=f"{what}: d_loss")
    count = len([k for k in reference if k.startswith("w_")])
    assert count and len([k for k in other if k.startswith("w_")]) == count
    with np.load(start) as initial:
        begin = np.concatenate([initial[f"arr_{i}"].ravel() for i in range(count)])
    end = np.concatenate([reference[f"w_{i}"].ravel() for i in range(count)])
    got = np.concatenate([other[f"w_{i}"].ravel() for i in range(count)])
    # The final weights in the same sense: the 50 steps' updates agree to 1 %, all the
    # weights together to 1e-3 (measured 2.3e-4 on JAX, AMX Xeon).
    gap = np.linalg.norm(got - end)
    assert gap <= update_rtol * np.linalg.norm(end - begin), (what, gap, end - begin)
    assert gap <= weights_rtol * np.linalg.norm(end), (what, gap, np.linalg.norm(end))


@pytest.mark.slow
def test_fit_on_jax_and_torch_follows_tensorflow_step_for_step(tfrecord_dir, tmp_path):
    """The same weights and batches through the command's own training function: JAX's
    and PyTorch's 50 steps follow TensorFlow's."""
    pytest.importorskip("torch")
    weights = tmp_path / "weights.npz"
    reference = _trajectory("tensorflow", tfrecord_dir, tmp_path, weights)
    for backend in ("jax", "torch"):
        other = _trajectory(backend, tfrecord_dir, tmp_path, weights)
        _assert_follows(reference, other, weights, backend)


@pytest.mark.slow
@pytest.mark.parametrize(
    "tf_flags, jax_flags, env, tolerances",
    [
        # The weights' average, updated inside G's optimizer.
        (("--ema", "0.9"), ("--ema", "0.9"), None, (1e-2, 1e-3)),
        # Each optimizer's loss scaling. float16 keeps 11 significant bits: two backends'
        # kernels round apart by ~5e-4 an operation, and over 50 steps the updates by
        # 4.3 % and the weights by 1.2e-3 (measured on an AMX Xeon).
        (("--mixed-precision", "float16"),) * 2 + (None, (1e-1, 1e-2)),
        # JAX's DataParallel over two forced host devices, each taking one slice a step,
        # against one TensorFlow device taking both. (TensorFlow's own mirrored run is
        # no reference: Keras's fit draws the first element of the data first, so the
        # training iterator starts at the next reshuffle of the seeded stream.)
        (
            ("--batch-slices", "2"),
            ("--cpu-replicas", "2"),
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            (1e-2, 1e-3),
        ),
    ],
    ids=["ema", "float16", "data_parallel"],
)
def test_jax_fit_follows_tensorflow_with_ema_loss_scaling_and_two_devices(
    tf_flags, jax_flags, env, tolerances, tfrecord_dir, tmp_path
):
    weights = tmp_path / "weights.npz"
    reference = _trajectory("tensorflow", tfrecord_dir, tmp_path, weights, *tf_flags)
    other = _trajectory("jax", tfrecord_dir, tmp_path, weights, *jax_flags, extra_env=env)
    _assert_follows(reference, other, weights, f"jax {' '.join(jax_flags)}", *tolerances)
