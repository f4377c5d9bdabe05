"""`python -m tests.backend.jax_data_parallel OUT.json`: two DyGAN train steps on JAX,
on one device and under `keras.distribution.DataParallel` over 2 forced host devices,
from the same weights on the same batches; writes both runs' losses."""

import json
import os
import sys


def main(argv):
    os.environ["KERAS_BACKEND"] = "jax"
    from dygan_tf.training.backends import force_host_devices, make_devices

    force_host_devices(2)
    import jax
    import keras
    import tensorflow as tf

    from dygan_tf.config.run_config import get_preset
    from dygan_tf.models.builders import build_dygan
    from tests.helpers import t2_task_batch

    assert len(jax.devices()) == 2, jax.devices()
    config = get_preset("tiny").override(discriminator="patch", image_size=32)
    image, target, task = t2_task_batch(4, 32)  # 12 rows: 2 steps of 6
    data = tf.data.Dataset.from_tensor_slices((image, target, task)).batch(6)
    keras.utils.set_random_seed(0)
    one = build_dygan(config)
    weights = (one.generator.get_weights(), one.discriminator.get_weights())
    runs = {"one_device": one.fit(data, epochs=1, verbose=0).history}
    devices = make_devices("jax", "mirrored", 2)
    assert devices.num_replicas_in_sync == 2
    with devices.scope():
        two = build_dygan(config)
    two.generator.set_weights(weights[0])
    two.discriminator.set_weights(weights[1])
    runs["data_parallel"] = two.fit(data, epochs=1, verbose=0).history
    kernel = two.generator.trainable_variables[0].value
    runs["replicated_on"] = len(kernel.sharding.device_set)
    with open(argv[0], "w", encoding="utf-8") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main(sys.argv[1:])
