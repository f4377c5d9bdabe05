"""DyGAN.get_config / from_config: the GAN (its two networks and lambda_l1) round-trips
through JSON and through a .keras file, as every Keras object of the project does."""

import copy
import json

import keras
import numpy as np
import pytest

from dygan_tf.config.run_config import get_preset
from dygan_tf.models.builders import build_dygan
from dygan_tf.models.dygan import DyGAN
from tests.helpers import t2_task_batch

SIZE = get_preset("tiny").model.image_size


def _json(value):
    """As stored in a .keras file: tuples become lists."""
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def gan():
    keras.utils.set_random_seed(0)
    return build_dygan(get_preset("tiny"), lambda_l1=300.0)


def _batch():
    image, _, task = t2_task_batch(1, SIZE)
    return {"image": image, "task": task}


def test_from_config_of_get_config_rebuilds_the_same_gan(gan):
    config = _json(gan.get_config())
    assert {"generator", "discriminator", "lambda_l1"} <= set(config)
    given = copy.deepcopy(config)
    restored = DyGAN.from_config(given)
    assert given == config  # from_config leaves the caller's dict alone
    assert isinstance(restored, DyGAN) and restored.lambda_l1 == 300.0
    assert _json(restored.get_config()) == config
    for a, b in ((gan.generator, restored.generator), (gan.discriminator, restored.discriminator)):
        assert _json(a.get_config()) == _json(b.get_config())
        assert a.count_params() == b.count_params() and a is not b
    out = restored.generator(_batch(), training=False).numpy()
    assert out.shape == (3, SIZE, SIZE, 1) and np.isfinite(out).all()


def test_from_config_validates_lambda(gan):
    config = _json(gan.get_config())
    config["lambda_l1"] = -1.0
    with pytest.raises(ValueError, match="Received: lambda_l1=-1"):
        DyGAN.from_config(config)


def test_keras_file_round_trip_keeps_weights_and_lambda(gan, tmp_path):
    path = tmp_path / "dygan.keras"
    gan.save(path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert isinstance(loaded, DyGAN) and loaded.lambda_l1 == 300.0
    for a, b in ((gan.generator, loaded.generator), (gan.discriminator, loaded.discriminator)):
        weights_a, weights_b = a.get_weights(), b.get_weights()
        assert len(weights_a) == len(weights_b) > 0
        for x, y in zip(weights_a, weights_b):
            np.testing.assert_array_equal(x, y)
    batch = _batch()
    np.testing.assert_array_equal(
        loaded.generator(batch, training=False).numpy(),
        gan.generator(batch, training=False).numpy(),
    )
