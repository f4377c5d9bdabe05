"""DyGAN on JAX: the same losses and gradients as TensorFlow, without TensorFlow installed.

The JAX runs are subprocesses (the Keras backend is chosen once per process); the
TensorFlow side runs here.
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


def _jax_env(**extra):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
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
    gradients (`DyGAN.tensorflow_gradients`) to `path`; returns that dict."""
    import keras

    from dygan_tf.models.builders import build_dygan

    keras.utils.set_random_seed(3)
    gan = build_dygan(config)
    image, target, task = _batch(config.model.image_size)
    losses, g_grads, d_grads = gan.tensorflow_gradients((image, target, task))
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
def test_jax_losses_and_gradients_equal_tensorflow_without_tensorflow(tmp_path, preset, changes):
    config = get_preset(preset).override(**changes)
    tf_record = _tensorflow_side(config, tmp_path / "tf.npz")
    _run_jax(
        "tests.backend.jax_gradients", tmp_path / "tf.npz", tmp_path / "jax.npz", "--no-tensorflow"
    )
    jax_record = np.load(tmp_path / "jax.npz")
    assert not bool(jax_record["tensorflow_loaded"])
    for name in ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss"):
        np.testing.assert_allclose(jax_record[f"loss_{name}"], tf_record[f"loss_{name}"], rtol=2e-6)
    _assert_same_gradients(tf_record, jax_record, "g_grad", tf_record["g_grads"])
    _assert_same_gradients(tf_record, jax_record, "d_grad", tf_record["d_grads"])
