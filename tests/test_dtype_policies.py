"""Keras's dtype-policy convention for the custom layers and the networks: a per-layer
`dtype="mixed_float16"` or `"mixed_bfloat16"` works (sublayers follow the parent's
policy), the variables stay float32, and the outputs are what the float32 layer gives
to the precision of the compute dtype."""

import keras
import numpy as np
import pytest

from dygan_tf.config.tasks import task_code
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.instance_norm import InstanceNormalization
from dygan_tf.models.discriminator import build_discriminator
from dygan_tf.models.generator import build_generator

POLICIES = {"mixed_float16": ("float16", 1e-2), "mixed_bfloat16": ("bfloat16", 6e-2)}


def _codes(n):
    return np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")][:n]).astype("float32")


def _dtype(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _close(got, want, tolerance):
    got, want = np.asarray(got, "float32"), np.asarray(want, "float32")
    assert np.isfinite(got).all()
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=tolerance * scale, rtol=0)


@pytest.mark.parametrize("policy", POLICIES)
def test_dyconv_follows_a_per_layer_policy(policy):
    compute, tolerance = POLICIES[policy]
    x = np.random.RandomState(0).randn(3, 8, 8, 4).astype("float32")
    layer = DyConv2D(6, 3, num_experts=3, dtype=policy, name="dy")
    y = layer(x, _codes(3))
    assert layer.routing.dtype_policy.name == policy
    assert _dtype(y) == compute
    assert all(v.dtype == "float32" for v in layer.weights)
    reference = DyConv2D(6, 3, num_experts=3, name="dy")
    reference(x, _codes(3))
    reference.set_weights(layer.get_weights())
    _close(y, reference(x, _codes(3)), tolerance)


@pytest.mark.parametrize("policy", POLICIES)
def test_instance_norm_follows_a_per_layer_policy(policy):
    compute, tolerance = POLICIES[policy]
    x = np.random.RandomState(1).randn(2, 8, 8, 3).astype("float32")
    layer = InstanceNormalization(dtype=policy)
    y = layer(x)
    assert _dtype(y) == compute
    assert all(v.dtype == "float32" for v in layer.weights)
    _close(y, InstanceNormalization()(x), tolerance)


@pytest.mark.parametrize("policy", POLICIES)
def test_networks_take_a_policy_and_give_float32_outputs(policy):
    compute, tolerance = POLICIES[policy]
    image = np.random.RandomState(2).uniform(-1, 1, (3, 64, 64, 1)).astype("float32")
    keras.utils.set_random_seed(0)
    generator = build_generator(image_size=64, base_filters=4, depth=2, dtype=policy)
    keras.utils.set_random_seed(0)
    plain = build_generator(image_size=64, base_filters=4, depth=2)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is untouched
    inner = [layer for layer in generator.layers if layer.name.startswith("up0_1_")]
    assert inner and all(layer.dtype_policy.name == policy for layer in inner)
    assert generator.get_layer("up0_1_conv").routing.dtype_policy.name == policy
    out = generator({"image": image, "task": _codes(3)})
    assert _dtype(out) == "float32"
    _close(out, plain({"image": image, "task": _codes(3)}), 10 * tolerance)

    discriminator = build_discriminator(image_size=64, base_filters=4, dtype=policy)
    assert discriminator.get_layer("scale1_out_conv").dtype_policy.name == policy
    scores = discriminator({"image": image, "target": image, "task": _codes(3)})
    assert _dtype(scores) == "float32" and np.isfinite(np.asarray(scores)).all()
    assert str(discriminator.get_layer("trunk2_norm").compute_dtype) == compute
