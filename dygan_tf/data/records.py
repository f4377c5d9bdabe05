"""The TFRecord feature schema: one `tf.train.Example` per axial slice.

The shard writer (`dygan-build-tfrecords`) and the reader (`dygan_tf.data.pipeline`) both
import this module, so the feature keys, dtypes and byte layouts live only here.
"""

import numpy as np

from dygan_tf.config.conditions import BEYOND_VOLUME
from dygan_tf.config.tasks import MODALITIES

SCHEMA_VERSION = 1  # one plane per modality: every build of --context 0
# `--context K` (K > 0, 2.5-D): each modality holds its slice's 2K + 1 axial planes.
CONTEXT_SCHEMA_VERSION = 2
# parse_example's key of a context record's planes: (H, W, 4 * (2K + 1)), modality-major
# (MODALITIES order), each modality's planes k - K .. k + K (`conditions.image_channels`).
PLANES_KEY = "planes"

# Images: float32 little-endian, row-major H x W, values in [-1, 1].
IMAGE_DTYPE = "<f4"
# Label maps: uint8 row-major H x W (seg holds BraTS labels 0, 1, 2, 4; zeros if absent).
LABEL_DTYPE = "u1"
LABEL_KEYS = ("seg", "brain_mask")
STRING_KEYS = ("case_id", "grade")
INT_KEYS = ("slice_index", "height", "width")


def schema_description(context=0):
    """The schema as plain JSON-able data, stored in manifest.json and checked on read:
    version 1 for `context` 0 (as every earlier build wrote it), else version 2, whose
    images hold each slice's 2 * context + 1 axial planes."""
    features = {key: {"type": "bytes", "content": "utf-8 string"} for key in STRING_KEYS}
    features.update({key: {"type": "int64"} for key in INT_KEYS})
    content = "float32 little-endian, row-major height x width, in [-1, 1]"
    if context:
        content = (
            f"float32 little-endian, row-major {2 * context + 1} x height x width: the "
            f"axial planes k-{context}..k+{context} of slice k, in [-1, 1]; "
            f"{BEYOND_VOLUME} beyond the volume's ends"
        )
    for key in MODALITIES:
        features[key] = {"type": "bytes", "content": content}
    features["seg"] = {
        "type": "bytes",
        "content": "uint8 row-major height x width, BraTS labels 0/1/2/4, zeros if absent",
    }
    features["brain_mask"] = {
        "type": "bytes",
        "content": "uint8 row-major height x width, 1 inside the brain",
    }
    if not context:
        return {
            "version": SCHEMA_VERSION,
            "record": "one tf.train.Example per axial slice",
            "features": features,
        }
    return {
        "version": CONTEXT_SCHEMA_VERSION,
        "record": "one tf.train.Example per axial slice, with its axial neighbours",
        "context": context,
        "features": features,
    }


def schema_context(schema):
    """The context K of a manifest's schema if this reader knows it (version 1: 0;
    version 2: its "context"), else None."""
    if not isinstance(schema, dict):
        return None
    context = schema.get("context", 0)
    if type(context) is not int or context < 0:
        return None
    return context if schema == schema_description(context) else None


def _check_plane(name, array, dtype, shape):
    array = np.asarray(array)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        raise ValueError(
            f"Feature {name!r} must be a 2-D array of shape {shape}. Received: shape={array.shape}"
        )
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _check_planes(name, array, shape):
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"Feature {name!r} must have shape {shape}. Received: shape={array.shape}")
    return np.ascontiguousarray(array, dtype=IMAGE_DTYPE).tobytes()


def serialize_example(case_id, grade, slice_index, images, seg=None, brain_mask=None, context=0):
    """One slice as a serialized `tf.train.Example`.

    `images` maps each of MODALITIES to a 2-D float array in [-1, 1] (with `context`
    K > 0: (2K + 1, H, W), the slice's axial planes k - K .. k + K); `seg` and
    `brain_mask` are 2-D integer arrays of the slice's shape (`seg=None` stores zeros).
    """
    import tensorflow as tf  # only the writer's parent process pays for this import

    missing = [m for m in MODALITIES if m not in images]
    if missing:
        raise ValueError(f"Missing images for {missing}. Received: {sorted(images)}")
    shape = np.shape(images[MODALITIES[0]])
    if context:
        if len(shape) != 3 or shape[0] != 2 * context + 1:
            raise ValueError(
                f"Images of context {context} must be ({2 * context + 1}, H, W). "
                f"Received: shape={shape}"
            )
        planes, shape = shape, shape[1:]
    elif len(shape) != 2:
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
        if context:
            feature[m] = _bytes(_check_planes(m, images[m], planes))
        else:
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


def parse_example(serialized, image_size, context=0):
    """Parses one serialized slice, of records written with `context`, into a dict of
    tensors (usable inside tf.data).

    Images become float32 [image_size, image_size] (the slice itself); with `context`
    K > 0 also PLANES_KEY: [image_size, image_size, 4 * (2K + 1)], every modality's
    planes k - K .. k + K, modality-major. seg and brain_mask uint8 [image_size,
    image_size]; case_id and grade tf.string; slice_index int64.
    """
    import tensorflow as tf

    parsed = tf.io.parse_single_example(serialized, feature_spec())
    shape = [image_size, image_size]
    out = {key: parsed[key] for key in STRING_KEYS + ("slice_index",)}
    planes = []
    for key in MODALITIES:
        # decode_raw reads float32 little-endian, the byte order the writer used.
        image = tf.io.decode_raw(parsed[key], tf.float32, little_endian=True)
        if context:
            image = tf.transpose(tf.reshape(image, [2 * context + 1, *shape]), [1, 2, 0])
            planes.append(image)
            out[key] = image[..., context]
        else:
            out[key] = tf.reshape(image, shape)
    if context:
        out[PLANES_KEY] = tf.concat(planes, axis=-1)
    for key in LABEL_KEYS:
        out[key] = tf.reshape(tf.io.decode_raw(parsed[key], tf.uint8), shape)
    return out
