"""What a run is: the modalities and the twelve tasks, the per-example conditions, the
run configuration (frozen dataclasses and presets) and the flags that override it.

    from dygan_tf.config import get_preset, task_code
"""

import importlib

# name -> module that defines it; imported on first use, so that importing this package
# starts neither Keras nor TensorFlow (the commands check their flags before that).
_EXPORTS = {
    "get_preset": "dygan_tf.config.run_config",
    "task_code": "dygan_tf.config.tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
