"""DyGAN: one conditional GAN that turns any one brain MR modality into the other three.

Importing the package registers its Keras objects (`DyConv2D` and the other layers,
`DyGAN`), so `keras.saving.load_model` reads any `.keras` file the project writes:

    import dygan_tf, keras
    generator = keras.saving.load_model("runs/demo/generator.keras")
"""

import os

# The project is TensorFlow-only (tf.data, tf.distribute, SavedModel export).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def _register_keras_objects():
    # TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL; importing it quietly
    # keeps every command's error output to its one line.
    from dygan_tf.cli import import_tensorflow_quietly

    import_tensorflow_quietly()
    from dygan_tf import layers, model  # noqa: F401 (their decorators register them)


_register_keras_objects()
