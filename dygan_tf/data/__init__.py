"""Data on disk: NIfTI reading and normalisation, BraTS case discovery, the TFRecord
schema, the shard builder and its manifest checks, the tf.data pipeline, the phantom.

    from dygan_tf.data import DatasetSpec
"""

from dygan_tf.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DatasetSpec": "dygan_tf.data.dataset_spec",
    },
)
