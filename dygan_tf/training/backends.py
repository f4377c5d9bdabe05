"""Which Keras backend a command trains on, and its devices when it is not TensorFlow.

TensorFlow is the default backend and stays the data library (tf.data over the TFRecord
shards) whatever trains. `--backend jax` (or `KERAS_BACKEND=jax`) runs the model and its
step on JAX: one device, or with `--strategy mirrored` / `--cpu-replicas N` Keras's
`DataParallel` over all local devices (N forced host devices on a CPU), the global batch
split across them as MirroredStrategy splits it. Several JAX hosts are not started from
here (docs/how-to/distributed.md says how); multi-worker training is TensorFlow's.
"""

import contextlib
import importlib.util
import os
import sys

from dygan_tf.utils import backend as keras_backend
from dygan_tf.utils.backend import BACKENDS
from dygan_tf.utils.errors import UserError

_LIBRARY = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def select_backend(name=None):
    """Makes `name` (or KERAS_BACKEND, else tensorflow) the Keras backend of this process,
    before Keras is imported; returns it. UserError lines start with the value."""
    name = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if name not in BACKENDS:
        raise UserError(f"{name!r}: expected one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(_LIBRARY[name]) is None:
        raise UserError(f"{name}: the {_LIBRARY[name]} package is not installed")
    if "keras" in sys.modules and keras_backend.name() != name:
        raise UserError(f"{name}: Keras already runs on {keras_backend.name()} here")
    os.environ["KERAS_BACKEND"] = name
    return name


class Devices:
    """What the training loop asks of a strategy, for JAX and PyTorch: the number of
    replicas the global batch is split over, and a scope to build the model in."""

    def __init__(self, replicas=1, distribution=None):
        self.num_replicas_in_sync = replicas
        self.distribution = distribution

    def scope(self):
        if self.distribution is None:
            return contextlib.nullcontext()
        return self.distribution.scope()


def force_host_devices(count):
    """Splits the CPU into `count` JAX devices: before JAX starts (XLA reads the flag)."""
    if count is None or count <= 1:
        return
    if "jax" in sys.modules:
        import jax

        if len(jax.devices()) != count:
            raise UserError(f"cannot split the CPU into {count} devices: JAX already started")
        return
    flag = f"--xla_force_host_platform_device_count={count}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


def make_devices(backend, strategy="auto", cpu_replicas=1):
    """The `Devices` of a JAX or PyTorch run for fit's --strategy and --cpu-replicas."""
    if strategy == "multiworker":
        raise UserError(
            f"multiworker: trains on TensorFlow only; on {backend}, one host's devices "
            "train with --strategy mirrored (docs/how-to/distributed.md)"
        )
    if backend == "torch":
        if strategy == "mirrored" or cpu_replicas > 1:
            raise UserError("mirrored: on torch, one device only; drop --strategy/--cpu-replicas")
        return Devices()
    force_host_devices(cpu_replicas)
    import jax
    import keras

    devices = jax.devices()
    several = (
        strategy == "mirrored" or cpu_replicas > 1 or (strategy == "auto" and len(devices) > 1)
    )
    if strategy == "default" or not several:
        return Devices()
    if len(devices) < 2:
        raise UserError(
            f"{strategy}: one device only; add GPUs or split the CPU (--cpu-replicas 2)"
        )
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)
    return Devices(len(devices), distribution)
