"""tf.distribute for DyGAN: choosing a strategy and splitting the CPU into replicas.

`make_strategy("auto")` mirrors over all visible GPUs when there are several, else runs
on one device. `--cpu-replicas N` splits the CPU into N logical devices so the
multi-replica code path runs (and is tested) on a machine without GPUs.
"""

import json
import os

import tensorflow as tf

from dygan_tf.config.run_config import STRATEGIES
from dygan_tf.utils.errors import UserError


def configure_cpu_replicas(count):
    """Splits the first CPU into `count` logical devices (before TF starts its devices)."""
    if count is None or count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing and len(existing) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise UserError(
            f"cannot split the CPU into {count} devices: TensorFlow's devices already started ({e})"
        ) from None


def make_strategy(name="auto", cpu_replicas=1):
    """The tf.distribute strategy `name` (one of `config.STRATEGIES`); UserError messages
    start with the name (the command puts its flag in front)."""
    if name not in STRATEGIES:
        raise UserError(f"{name!r}: expected one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise UserError(
                "multiworker: TF_CONFIG is not set (see README, 'Training on several machines')"
            )
        try:
            cluster = json.loads(config)["cluster"]
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"multiworker: TF_CONFIG is not valid JSON with a 'cluster' key: {config[:80]!r}"
            ) from None
        if not isinstance(cluster, dict) or not cluster:
            raise UserError("multiworker: TF_CONFIG has an empty cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    configure_cpu_replicas(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "default" or (name == "auto" and len(gpus) <= 1 and (cpu_replicas or 1) <= 1):
        return tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    if len(cpus) < 2:
        raise UserError(f"{name}: one device only; add GPUs or split the CPU (cpu_replicas=2)")
    # Cross-device ops on CPU: the default NCCL all-reduce needs GPUs.
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0])
    )
