"""Test setup: quiet TensorFlow, and two logical CPU devices for MirroredStrategy tests.

The CPU must be split before TensorFlow initialises its devices, so it happens here,
at collection time, before any test module builds a tensor.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
