"""DyGAN: one conditional GAN that turns any one brain MR modality into the other three."""

import os

# The project is TensorFlow-only (tf.data, tf.distribute, SavedModel export).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
