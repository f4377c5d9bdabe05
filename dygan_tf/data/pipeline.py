"""tf.data input pipeline over the slice shards written by data_prep.build_tfrecords.

Each stored slice becomes rows (dygan_tf.config.conditions): in the paper's mode one per
target modality, the source image repeated, the target image and the task code. Only
shards listed in manifest.json are read, so a killed build can never feed half-written
data, and only after their sha256 matches the manifest's, so a corrupted shard is named
instead of failing deep inside tf.data.
"""

import numpy as np
import tensorflow as tf

from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES, check_modality
from dygan_tf.data import records
from dygan_tf.data.manifest import read_manifest, shard_files
from dygan_tf.data.shard_check import check_shards
from dygan_tf.utils.errors import UserError

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
    inputs="single",
    every_row=True,
    slice_offset=0,
    case_ids=None,
    keep_cases=True,
    rows=None,
):
    """A tf.data.Dataset of `(image, condition, ...)` batches: `(image, target, task)`
    (plus `meta` if asked).

    Each stored slice becomes rows (`dygan_tf.config.conditions.row_table`): in the paper's
    mode one per target, the source slice repeated. Only shards listed in the folder's
    manifest are read, each checked against the manifest's sha256 first.

    Args:
        tfrecord_dir: a shard folder written by `data_prep.build_tfrecords`.
        split: a split of its manifest, "train" or "test".
        source: the source modality, or "any" (every modality in turn; with
            `inputs="multi"` every non-empty set of the others).
        targets: the target modalities.
        batch_slices: slices per batch.
        shuffle: False, True (a buffer of 256 slices) or a buffer size; it also
            shuffles the shard order.
        repeat: repeat forever.
        seed: the shuffle seed.
        num_workers, worker_index: worker i of n reads shards i::n (multi-worker).
        return_meta: add a 4th element, a dict of per-row `case_id`, `grade`,
            `slice_index`, `seg` and `brain_mask` ((B, H, W, 1) uint8), `target`,
            `row` (`conditions.row_key`) and `available` ((B, 4) mask).
        drop_remainder: drop a last smaller batch.
        inputs: "single" (1-channel source, 12-bit task code) or "multi" (4 channels,
            missing ones filled, 8-bit condition).
        every_row: each slice gives every row of the table (evaluation, and the
            paper's training); False: 3 rows a slice, cycling through the table so
            that every row is drawn equally often (training with "any" or "multi").
        slice_offset: where in that cycle the first slice starts (training passes
            the slices of the epochs before, so the cycle runs on across epochs).
        case_ids, keep_cases: only the slices of `case_ids` (`keep_cases=True`), or
            all but them; None: every slice.
        rows: an explicit row table (`conditions.Row`s) instead of the one of
            `inputs`, `source` and `targets` (evaluation scores several kinds of model
            on the rows of one).

    Returns:
        A dataset of batches, rows slice-major: `image` (B, H, W, C) float32 in
        [-1, 1] (C = 1 or 4), `target` (B, H, W, 1) float32, `task` (B, 12 or 8)
        float32.

    Example:

    >>> ds = make_dataset("data/brats19", "train", batch_slices=2)  # doctest: +SKIP
    >>> image, target, task = next(iter(ds))  # doctest: +SKIP
    >>> image.shape, task.shape  # doctest: +SKIP
    (TensorShape([6, 256, 256, 1]), TensorShape([6, 12]))
    """
    if source != conditions.SOURCE_ANY:
        check_modality(source, "source modality")
    if inputs not in conditions.INPUTS:
        raise ValueError(f"inputs must be one of {conditions.INPUTS}. Received: inputs={inputs!r}")
    for t in targets:
        check_modality(t, "target modality")
    table = list(rows) if rows is not None else conditions.row_table(inputs, source, targets)
    if not table:
        raise ValueError(f"No rows for source={source!r}, targets={tuple(targets)}")
    for row in table:  # validates every row
        conditions.check_condition(row.available, row.target)
        if inputs == "single" and len(row.available) != 1:
            raise ValueError(f"A single-source row has one source. Received: {row}")
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
    if case_ids is not None:
        ids = tf.constant(sorted(case_ids) or [""])

        def wanted(example):
            hit = tf.reduce_any(tf.equal(example["case_id"], ids))
            return hit if keep_cases else tf.logical_not(hit)

        ds = ds.filter(wanted)
    plan = RowPlan(table, inputs, source, every_row, slice_offset)
    ds = ds.enumerate().map(lambda n, example: {**example, "position": n})
    ds = ds.batch(batch_slices, drop_remainder=drop_remainder)
    ds = ds.map(
        lambda example: plan.expand(example, return_meta),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


class RowPlan:
    """Expands a batch of parsed slices into rows of `table` (see `make_dataset`)."""

    def __init__(self, table, inputs, source, every_row, slice_offset):
        self.inputs = inputs
        self.size = len(table)
        self.per_slice = (
            self.size if every_row else conditions.rows_per_slice(inputs, source, self.size)
        )
        self.every_row, self.slice_offset = every_row, int(slice_offset)
        index = {m: i for i, m in enumerate(MODALITIES)}
        self.masks = tf.constant(
            np.stack([conditions.availability_mask(r.available) for r in table])
        )
        self.codes = tf.constant(np.stack([conditions.row_code(r, inputs) for r in table]))
        self.sources = tf.constant([index[r.available[0]] for r in table], tf.int32)
        self.targets = tf.constant([index[r.target] for r in table], tf.int32)
        self.keys = tf.constant([r.key for r in table])
        self.names = tf.constant([r.target for r in table])

    def row_indices(self, position):
        """(slices * per_slice,) table rows of the slices at these stream positions."""
        j = tf.range(self.per_slice, dtype=tf.int64)[None, :]
        if self.every_row:
            index = tf.zeros_like(position)[:, None] + j
        else:
            index = ((position[:, None] + self.slice_offset) * self.per_slice + j) % self.size
        return tf.reshape(tf.cast(index, tf.int32), [-1])

    def expand(self, example, return_meta):
        index = self.row_indices(example["position"])
        stacked = tf.stack([example[m] for m in MODALITIES], axis=-1)  # (b, H, W, 4)
        stacked = tf.repeat(stacked, self.per_slice, axis=0)  # slice-major rows
        mask = tf.gather(self.masks, index)
        if self.inputs == "multi":
            image = tf.where(mask[:, None, None, :] > 0, stacked, conditions.FILL_VALUE)
        else:
            image = tf.gather(stacked, tf.gather(self.sources, index), axis=3, batch_dims=1)
            image = image[..., None]
        target = tf.gather(stacked, tf.gather(self.targets, index), axis=3, batch_dims=1)
        target = target[..., None]
        task = tf.gather(self.codes, index)
        if not return_meta:
            return image, target, task
        meta = {k: tf.repeat(example[k], self.per_slice, axis=0) for k in META_KEYS}
        meta["seg"] = meta["seg"][..., None]
        meta["brain_mask"] = meta["brain_mask"][..., None]
        meta["target"] = tf.gather(self.names, index)
        meta["row"] = tf.gather(self.keys, index)
        meta["available"] = mask
        return image, target, task, meta
