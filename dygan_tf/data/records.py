"""The TFRecord feature schema: one `tf.train.Example` per axial slice.

The shard writer (`dygan-build-tfrecords`) and the reader (`dygan_tf.data.pipeline`) both
import this module, so the feature keys, dtypes and byte layouts live only here.
"""

import numpy as np

from dygan_tf.config.tasks import MODALITIES

SCHEMA_VERSION = 1

# Images: float32 little-endian, row-major H x W, values in [-1, 1].
IMAGE_DTYPE = "<f4"
# Label maps: uint8 row-major H x W (seg holds BraTS labels 0, 1, 2, 4; zeros if absent).
LABEL_DTYPE = "u1"
LABEL_KEYS = ("seg", "brain_mask")
STRING_KEYS = ("case_id", "grade")
INT_KEYS = ("slice_index", "height", "width")


def schema_description():
    """The schema as plain JSON-able data, stored in manifest.json and checked on read."""
    features = {key: {"type": "bytes", "content": "utf-8 string"} for key in STRING_KEYS}
    features.update({key: {"type": "int64"} for key in INT_KEYS})
    for key in MODALITIES:
        features[key] = {
            "type": "bytes",
            "content": "float32 little-endian, row-major height x width, in [-1, 1]",
        }
    features["seg"] = {
        "type": "bytes",
        "content": "uint8 row-major height x width, BraTS labels 0/1/2/4, zeros if absent",
    }
    features["brain_mask"] = {
        "type": "bytes",
        "content": "uint8 row-major height x width, 1 inside the brain",
    }
    return {
        "version": SCHEMA_VERSION,
        "record": "one tf.train.Example per axial slice",
        "features": features,
    }


def _check_plane(name, array, dtype, shape):
    array = np.asarray(array)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        raise ValueError(
            f"Feature {name!r} must be a 2-D array of shape {shape}. Received: shape={array.shape}"
        )
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def serialize_example(case_id, grade, slice_index, images, seg=None, brain_mask=None):
    """One slice as a serialized `tf.train.Example`.

    `images` maps each of MODALITIES to a 2-D float array in [-1, 1]; `seg` and
    `brain_mask` are 2-D integer arrays of the same shape (`seg=None` stores zeros).
    """
    import tensorflow as tf  # only the writer's parent process pays for this import

    missing = [m for m in MODALITIES if m not in images]
    if missing:
        raise ValueError(f"Missing images for {missing}. Received: {sorted(images)}")
    shape = np.shape(images[MODALITIES[0]])
    if len(shape) != 2:
        raise ValueError(f"Images must be 2-D. Received: shape={shape}")
    if seg is None:
        seg = np.zeros(shape, dtype=LABEL_DTYPE)
    if brain_mask is None:
        raise ValueError("brain_mask is required.")

    def _bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def _int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {
        "case_id": _bytes(str(case_id).encode("utf-8")),
        "grade": _bytes(str(grade).encode("utf-8")),
        "slice_index": _int(slice_index),
        "height": _int(shape[0]),
        "width": _int(shape[1]),
        "seg": _bytes(_check_plane("seg", seg, LABEL_DTYPE, shape)),
        "brain_mask": _bytes(_check_plane("brain_mask", brain_mask, LABEL_DTYPE, shape)),
    }
    for m in MODALITIES:
        feature[m] = _bytes(_check_plane(m, images[m], IMAGE_DTYPE, shape))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    # Deterministic map ordering, so rebuilding gives byte-identical shards.
    return example.SerializeToString(deterministic=True)


def feature_spec():
    """The `tf.io.parse_single_example` spec for one slice."""
    import tensorflow as tf

    spec = {key: tf.io.FixedLenFeature([], tf.string) for key in STRING_KEYS}
    spec.update({key: tf.io.FixedLenFeature([], tf.int64) for key in INT_KEYS})
    for key in MODALITIES + LABEL_KEYS:
        spec[key] = tf.io.FixedLenFeature([], tf.string)
    return spec


def parse_example(serialized, image_size):
    """Parses one serialized slice into a dict of tensors (usable inside tf.data).

    Images become float32 [image_size, image_size]; seg and brain_mask uint8 of the
    same shape; case_id and grade tf.string; slice_index int64.
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    shape = [image_size, image_size]
    out = {key: parsed[key] for key in STRING_KEYS + ("slice_index",)}
    for key in MODALITIES:
        # decode_raw reads float32 little-endian, the byte order the writer used.
        out[key] = tf.reshape(tf.io.decode_raw(parsed[key], tf.float32, little_endian=True), shape)
    for key in LABEL_KEYS:
        out[key] = tf.reshape(tf.io.decode_raw(parsed[key], tf.uint8), shape)
    return out
