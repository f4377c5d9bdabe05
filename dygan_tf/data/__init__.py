"""Data on disk: NIfTI reading and normalisation, BraTS case discovery, the TFRecord
schema, the shard builder and its manifest checks, the tf.data pipeline, the phantom.
"""
