"""The custom layers: `DyConv2D` (CondConv steered by the task, with its ways of
computing per-example convolutions and the dispatch that picks one) and
`InstanceNormalization`.

    from dygan_tf.layers import DyConv2D, InstanceNormalization
"""

import importlib

# name -> module that defines it; imported on first use, so that importing this package
# starts neither Keras nor TensorFlow (the commands check their flags before that).
_EXPORTS = {
    "DyConv2D": "dygan_tf.layers.dyconv",
    "InstanceNormalization": "dygan_tf.layers.instance_norm",
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
