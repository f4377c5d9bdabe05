"""The CPU this process runs on, and TensorFlow's oneDNN setting decided per CPU kind.

TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI/BF16,
AVX-VNNI or AMX; on an AVX2-only CPU it leaves them off. Measured here (the train step
of the demo preset, docs/results/performance.md), oneDNN is the faster choice on both
kinds we had, so the package sets `TF_ENABLE_ONEDNN_OPTS=1` on them before TensorFlow
starts. A user's own `TF_ENABLE_ONEDNN_OPTS` always wins; on kinds we did not measure
(AMX, other architectures) TensorFlow's own default stays.
"""

import os
import platform
import sys

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
# CPU kind -> the TF_ENABLE_ONEDNN_OPTS value measured faster there (kinds we measured).
ONEDNN_BY_KIND = {"avx2": "1", "avx512": "1"}
# Unset, TensorFlow enables oneDNN on CPUs with one of these flags (x86-64 only).
TENSORFLOW_ONEDNN_FLAGS = frozenset({"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile"})


def _first_processor(keys, path):
    """The value of the first of `keys` in /proc/cpuinfo's first processor, or None."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags(path="/proc/cpuinfo"):
    """The first processor's flags (an empty set where /proc/cpuinfo is not there)."""
    return frozenset((_first_processor(("flags", "Features"), path) or "").split())


def cpu_model(path="/proc/cpuinfo"):
    """The first processor's model name ("Intel(R) Xeon(R) Processor"), else the
    platform's processor string (may be empty)."""
    return _first_processor(("model name", "Model", "Processor"), path) or platform.processor()


def cpu_kind(flags=None, machine=None):
    """ "amx", "avx512", "avx2" (x86-64 by its widest vector unit) or "other"."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    machine = platform.machine() if machine is None else machine
    if machine not in ("x86_64", "AMD64"):
        return "other"
    if "amx_tile" in flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def configure_onednn(environ=None, kind=None, tensorflow_loaded=None):
    """Sets TF_ENABLE_ONEDNN_OPTS for this CPU kind unless the user set it (or TensorFlow
    is already loaded, when it is too late). Returns `describe_onednn()`'s dict."""
    environ = os.environ if environ is None else environ
    if tensorflow_loaded is None:
        tensorflow_loaded = "tensorflow" in sys.modules
    if ONEDNN_VARIABLE in environ:
        source = environ.get("_DYGAN_ONEDNN_SOURCE", "user")
    elif tensorflow_loaded:
        source = "tensorflow default (TensorFlow was loaded first)"
    else:
        value = ONEDNN_BY_KIND.get(kind or cpu_kind())
        if value is None:
            source = "tensorflow default (CPU kind not measured)"
        else:
            environ[ONEDNN_VARIABLE] = value
            # Child processes inherit the variable: they must still report it as ours.
            environ["_DYGAN_ONEDNN_SOURCE"] = source = "dygan_tf (per CPU kind)"
    return describe_onednn(environ, kind, source)


def describe_onednn(environ=None, kind=None, source=None, flags=None):
    """{"cpu_kind", "TF_ENABLE_ONEDNN_OPTS", "enabled", "source"} for benchmark records."""
    environ = os.environ if environ is None else environ
    flags = cpu_flags() if flags is None else frozenset(flags)
    kind = kind or cpu_kind(flags)
    value = environ.get(ONEDNN_VARIABLE)
    if value is not None:
        enabled = value.strip().lower() in ("1", "true")
    else:
        enabled = bool(flags & TENSORFLOW_ONEDNN_FLAGS) and kind != "other"
    if source is None:
        source = environ.get("_DYGAN_ONEDNN_SOURCE", "user" if value is not None else None)
        source = source or "tensorflow default"
    return {"cpu_kind": kind, ONEDNN_VARIABLE: value, "enabled": enabled, "source": source}
