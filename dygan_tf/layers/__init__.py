"""The custom layers: `DyConv2D` (CondConv steered by the task, with its ways of
computing per-example convolutions and the dispatch that picks one) and
`InstanceNormalization`.

    from dygan_tf.layers import DyConv2D, InstanceNormalization
"""

from dygan_tf.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DyConv2D": "dygan_tf.layers.dyconv",
        "InstanceNormalization": "dygan_tf.layers.instance_norm",
    },
)
