"""The machine, the device a backend computes on, and how much of its memory a step
took: the facts the step benchmarks record beside their timings (no library imported
until asked)."""

import os
import platform


def machine():
    """The backend, its library, Keras, the device kind, the CPU's kind and flags, cores,
    Python, the load average; oneDNN's setting on TensorFlow, the devices on JAX."""
    import keras

    from dygan_tf.utils import backend, cpu

    name = backend.name()
    library = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name])
    info = {
        "backend": name,
        "library_version": library.__version__,
        "keras": keras.__version__,
        "device": backend.device_kind(),
        "cpu_kind": cpu.cpu_kind(),
        "cpu_flags": sorted(f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    if name == "jax":
        import jax

        info["devices"] = [str(d) for d in jax.devices()]
    if name == "tensorflow":
        info["onednn"] = cpu.describe_onednn()
    return info


def reset_peak_memory():
    """PyTorch's peak counter starts again at each run; JAX's cannot be reset."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def device_memory():
    """{"peak_bytes_in_use", "bytes_limit", "covers"} of the backend's first device, or
    None where the backend keeps no such count (a CPU). JAX's peak is the process's so
    far (its counter cannot be reset: with both precisions in one process the second
    includes the first); PyTorch's is this `measure` call's (reset at its start). Both
    cover the method measurements and both models' states and steps, not the matmul
    peak's operands. TensorFlow's runs here are on a CPU: None."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return {
            "peak_bytes_in_use": int(stats["peak_bytes_in_use"]),
            "bytes_limit": stats.get("bytes_limit"),
            "covers": "this process so far (JAX's peak is never reset)",
        }
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return {
            "peak_bytes_in_use": int(torch.cuda.max_memory_allocated()),
            "bytes_limit": int(torch.cuda.get_device_properties(0).total_memory),
            "covers": "this run (torch.cuda.max_memory_allocated, reset at its start)",
        }
    return None


def device_facts():
    """The device's name and the float32 math settings of the backend's library (TF32:
    JAX's default matmul precision is None, which is TF32 on NVIDIA GPUs since Ampere;
    PyTorch's own switches are recorded as they are, not changed)."""
    import keras

    backend = keras.backend.backend()
    facts = {"device_name": None, "float32_settings": {}}
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        facts["device_name"] = device.device_kind
        facts["jax_platform"] = device.platform
        facts["float32_settings"] = {
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision
        }
    elif backend == "torch":
        import torch

        cuda = torch.cuda.is_available()
        facts["device_name"] = torch.cuda.get_device_name(0) if cuda else "cpu"
        facts["torch_cuda"] = torch.version.cuda
        facts["float32_settings"] = {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.get_float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        facts["device_name"] = (
            tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else "cpu"
        )
        facts["float32_settings"] = {
            "tf.config.experimental.tensor_float_32_execution_enabled": (
                tf.config.experimental.tensor_float_32_execution_enabled()
            )
        }
    return facts
