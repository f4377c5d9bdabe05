"""tf.data input pipeline over the slice shards written by data_prep.build_tfrecords.

Each stored slice becomes one row per target modality: the source image repeated,
the target image and the task code from dygan_tf.tasks. Only shards listed in
manifest.json are read, so a killed build can never feed half-written data, and only
after their sha256 matches the manifest's, so a corrupted shard is named instead of
failing deep inside tf.data.
"""

import numpy as np
import tensorflow as tf

from dygan_tf import records
from dygan_tf.errors import UserError
from dygan_tf.manifest import read_manifest, shard_files
from dygan_tf.shard_check import check_shards
from dygan_tf.tasks import check_modality, task_code

DEFAULT_SHUFFLE_BUFFER = 256
READ_BUFFER_BYTES = 4 << 20
META_KEYS = ("case_id", "grade", "slice_index", "seg", "brain_mask")


def make_dataset(
    tfrecord_dir,
    split,
    source="t2",
    targets=("flair", "t1", "t1ce"),
    batch_slices=1,
    shuffle=False,
    repeat=False,
    seed=None,
    num_workers=1,
    worker_index=0,
    return_meta=False,
    drop_remainder=False,
):
    """A tf.data.Dataset of `(image, target, task)` batches (plus `meta` if asked).

    Each stored slice becomes one row per target: the source slice repeated, the
    target slice and the task code. Only shards listed in the folder's manifest are
    read, each checked against the manifest's sha256 first.

    Args:
        tfrecord_dir: a shard folder written by `data_prep.build_tfrecords`.
        split: a split of its manifest, "train" or "test".
        source: the source modality.
        targets: the target modalities (each a row of every slice).
        batch_slices: slices per batch (a batch has `batch_slices * len(targets)` rows).
        shuffle: False, True (a buffer of 256 slices) or a buffer size; it also
            shuffles the shard order.
        repeat: repeat forever.
        seed: the shuffle seed.
        num_workers, worker_index: worker i of n reads shards i::n (multi-worker).
        return_meta: add a 4th element, a dict of per-row `case_id`, `grade`,
            `slice_index`, `seg` and `brain_mask` ((B, H, W, 1) uint8) and `target`.
        drop_remainder: drop a last smaller batch.

    Returns:
        A dataset of batches, rows slice-major: `image` (B, H, W, 1) float32 in
        [-1, 1], `target` (B, H, W, 1) float32, `task` (B, 12) float32
        (`tasks.task_code(source, target)`).

    Example:

    >>> ds = make_dataset("data/brats19", "train", batch_slices=2)  # doctest: +SKIP
    >>> image, target, task = next(iter(ds))  # doctest: +SKIP
    >>> image.shape, task.shape  # doctest: +SKIP
    (TensorShape([6, 256, 256, 1]), TensorShape([6, 12]))
    """
    check_modality(source, "source modality")
    targets = tuple(targets)
    codes = tf.constant(np.stack([task_code(source, t) for t in targets]))  # validates them
    if batch_slices < 1:
        raise ValueError(f"batch_slices must be >= 1. Received: batch_slices={batch_slices}")
    if not 0 <= worker_index < num_workers:
        raise ValueError(
            f"worker_index must be in [0, num_workers). Received: "
            f"worker_index={worker_index}, num_workers={num_workers}"
        )
    manifest = read_manifest(tfrecord_dir)
    files = shard_files(tfrecord_dir, split, manifest)[worker_index::num_workers]
    check_shards(tfrecord_dir, split, manifest)  # once per file and process (cached)
    if not files:
        raise UserError(
            f"split {split!r} of {tfrecord_dir} has fewer shards than "
            f"num_workers={num_workers}; rebuild with more shards"
        )
    image_size = manifest["image_size"]
    compression = "GZIP" if manifest["compression"] == "gzip" else ""
    buffer = DEFAULT_SHUFFLE_BUFFER if shuffle is True else int(shuffle or 0)

    ds = tf.data.Dataset.from_tensor_slices(files)
    if buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(
            f, compression_type=compression, buffer_size=READ_BUFFER_BYTES
        ),
        cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # a seeded run reads the same order every time
    )
    ds = ds.map(
        lambda x: records.parse_example(x, image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # a seeded run reads the same order every time
    )
    if buffer:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_slices, drop_remainder=drop_remainder)
    n_targets = len(targets)

    def expand(example):
        b = tf.shape(example[source])[0]
        rows = b * n_targets
        image = tf.repeat(example[source], n_targets, axis=0)[..., None]
        target = tf.reshape(
            tf.stack([example[t] for t in targets], axis=1), [rows, image_size, image_size]
        )[..., None]
        task = tf.tile(codes, [b, 1])
        if not return_meta:
            return image, target, task
        meta = {k: tf.repeat(example[k], n_targets, axis=0) for k in META_KEYS}
        meta["seg"] = meta["seg"][..., None]
        meta["brain_mask"] = meta["brain_mask"][..., None]
        meta["target"] = tf.tile(tf.constant(targets), [b])
        return image, target, task, meta

    ds = ds.map(expand, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
