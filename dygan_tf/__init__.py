"""DyGAN: one conditional GAN that turns any one brain MR modality into the other three.

Importing the package registers its Keras objects (`DyConv2D` and the other layers,
`DyGAN`), so `keras.saving.load_model` reads any `.keras` file the project writes:

    import dygan_tf, keras
    generator = keras.saving.load_model("runs/demo/generator.keras")

The registration happens as soon as Keras is imported (at once if it already is), so
the commands still parse their flags and report bad ones before TensorFlow starts.

The public API, each name imported on first use:

    from dygan_tf import DyConv2D, DyGAN, build_dygan, make_dataset, get_preset, task_code

Importing the package sets two environment variables, each only where the user has not:
KERAS_BACKEND=tensorflow (TensorFlow is the default backend and the data library) and
TF_ENABLE_ONEDNN_OPTS by CPU kind (measured per kind: docs/results/performance.md), both
of which must be set before Keras or TensorFlow starts (with _DYGAN_ONEDNN_SOURCE beside
the second, saying who chose it).
"""

import importlib.abc
import importlib.util
import os
import sys

from dygan_tf.utils.lazy import lazy_exports

# TensorFlow is the default backend and the data library (tf.data, tf.distribute,
# SavedModel export); the model and its train step also run on JAX and PyTorch
# (KERAS_BACKEND or `fit --backend`).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _configure_cpu():
    # Before TensorFlow starts: oneDNN on or off by CPU kind (a user's setting wins).
    from dygan_tf.utils import cpu

    cpu.configure_onednn()


_configure_cpu()

__version__ = "0.2.0"

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DyConv2D": "dygan_tf.layers.dyconv",
        "InstanceNormalization": "dygan_tf.layers.instance_norm",
        "DyGAN": "dygan_tf.models.dygan",
        "build_dygan": "dygan_tf.models.builders",
        "build_generator": "dygan_tf.models.generator",
        "build_discriminator": "dygan_tf.models.discriminator",
        "make_dataset": "dygan_tf.data.pipeline",
        "DatasetSpec": "dygan_tf.data.dataset_spec",
        "get_preset": "dygan_tf.config.run_config",
        "task_code": "dygan_tf.config.tasks",
        "Predictor": "dygan_tf.inference.predictor",
        "load_run": "dygan_tf.run_folder.files",
    },
)


def _register_keras_objects():
    from dygan_tf.layers import dyconv, instance_norm  # noqa: F401 (their decorators register them)
    from dygan_tf.models import dygan, optimizers  # noqa: F401


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Finds `keras` with the normal finders and registers our objects right after its
    module has run (TensorFlow may look `keras` up more than once before loading it);
    then steps out of the way."""

    def find_spec(self, name, path, target=None):
        if name != "keras":
            return None
        sys.meta_path.remove(self)  # the normal finders, without this one
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run_module = spec.loader.exec_module

        def run_and_register(module):
            run_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_keras_objects()

        spec.loader.exec_module = run_and_register
        return spec


if "keras" in sys.modules:
    _register_keras_objects()
elif not any(isinstance(f, _RegisterWhenKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())
