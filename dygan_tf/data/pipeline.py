"""tf.data input pipeline over the slice shards written by dygan-build-tfrecords.

Each stored slice becomes rows (dygan_tf.config.conditions): in the paper's mode one per
target modality, the source image repeated, the target image and the task code. Only
shards listed in manifest.json are read, so a killed build can never feed half-written
data, and only after their sha256 matches the manifest's, so a corrupted shard is named
instead of failing deep inside tf.data.
"""

import contextlib

import numpy as np
import tensorflow as tf

from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import epoch_draw, records
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data.dataset_spec import DatasetSpec
from dygan_tf.data.shard_check import check_shards, data_loss_error
from dygan_tf.data.shard_folder import open_shards
from dygan_tf.utils.errors import UserError
from dygan_tf.utils.options import options_of

DEFAULT_SHUFFLE_BUFFER = 256
READ_BUFFER_BYTES = 4 << 20
META_KEYS = ("case_id", "grade", "slice_index", "seg", "brain_mask")


@contextlib.contextmanager
def data_loss_named(shards, splits):
    """Re-raises TensorFlow's DataLossError, met while reading `splits` of `shards` after
    `make_dataset`'s up-front check passed, as `shard_check.data_loss_error`'s one line."""
    try:
        yield
    except tf.errors.DataLossError as e:
        raise data_loss_error(shards, splits, e) from None


def make_dataset(shards, split, spec=None, **fields):
    """A tf.data.Dataset of `(image, condition, ...)` batches: `(image, target, task)`
    (plus `meta` if asked).

    Each stored slice becomes rows (`dygan_tf.config.conditions.row_table`): in the paper's
    mode one per target, the source slice repeated. Only shards listed in the folder's
    manifest are read, each checked against the manifest's sha256 first.

    Args:
        shards: a `ShardFolder` (`dygan_tf.data.shard_folder`), or the path of a shard
            folder written by `dygan-build-tfrecords` (its manifest is read once).
        split: a split of its manifest, "train" or "test".
        spec: a `DatasetSpec`: what to read and how (source, targets, batching,
            shuffling, rows, ...).
        **fields: instead of `spec`, its fields as keywords (`DatasetSpec(**fields)`);
            giving both is a TypeError.

    Returns:
        A dataset of batches, rows slice-major: `image` (B, H, W, C) float32 in
        [-1, 1] (C = 1 or 4, times 2K + 1 with `context` K), `target` (B, H, W, 1)
        float32, `task` (B, 12 or 8) float32.

    Example:

    >>> ds = make_dataset("data/brats19", "train", batch_slices=2)  # doctest: +SKIP
    >>> image, target, task = next(iter(ds))  # doctest: +SKIP
    >>> image.shape, task.shape  # doctest: +SKIP
    (TensorShape([6, 256, 256, 1]), TensorShape([6, 12]))
    >>> spec = DatasetSpec(source="any", batch_slices=2, return_meta=True)
    >>> ds = make_dataset("data/brats19", "test", spec)  # doctest: +SKIP
    """
    spec = options_of(DatasetSpec, spec, fields, "make_dataset", "spec")
    shards = open_shards(shards)
    hint = f"rebuild them with dygan-build-tfrecords --context {spec.context}"
    shards.require_context(spec.context, "the dataset", hint)
    files = select_shards(shards, split, spec)
    drawn = None
    if spec.per_case is not None:
        drawn = epoch_draw.draw(shards.split_cases(split), spec.per_case, spec.seed)
    ds = read_slices(files, shards.manifest, spec, drawn)
    if spec.case_ids is not None:
        ds = filter_cases(ds, spec.case_ids, spec.keep_cases)
    return batch_rows(ds, spec, shards.context)


def select_shards(shards, split, spec):
    """This worker's shard files of `split` of a `ShardFolder`: only shards the manifest
    lists, each checked against its sha256 once per file and process."""
    files = shards.files(split)[spec.worker_index :: spec.num_workers]
    check_shards(shards.path, split, shards.manifest)  # once per file and process (cached)
    if not files:
        raise UserError(
            f"split {split!r} of {shards.path} has fewer shards than "
            f"num_workers={spec.num_workers}; rebuild with more shards"
        )
    return files


def read_slices(files, manifest, spec, drawn=None):
    """The parsed slices of `files` (`records.parse_example`), in a seeded order:
    only those of `drawn` ({case id: slice indices}) if given, shards and slices
    shuffled if `spec.shuffle`, repeated if `spec.repeat`."""
    image_size, stored = manifest["image_size"], manifest_lib.context_of(manifest)
    compression = "GZIP" if manifest["compression"] == "gzip" else ""
    buffer = DEFAULT_SHUFFLE_BUFFER if spec.shuffle is True else int(spec.shuffle or 0)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if buffer:
        ds = ds.shuffle(len(files), seed=spec.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(
            f, compression_type=compression, buffer_size=READ_BUFFER_BYTES
        ),
        cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # a seeded run reads the same order every time
    )
    ds = ds.map(
        lambda x: records.parse_example(x, image_size, stored),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # a seeded run reads the same order every time
    )
    if drawn is not None:
        ds = ds.filter(drawn_slices(drawn))  # before the shuffle: its buffer holds drawn ones
    if buffer:
        ds = ds.shuffle(buffer, seed=spec.seed, reshuffle_each_iteration=True)
    if spec.repeat:
        ds = ds.repeat()
    return ds


def drawn_slices(drawn):
    """A `Dataset.filter` predicate: whether a parsed slice is one of `drawn`
    ({case id: slice indices}), looked up as "<case id>/<slice index>"."""
    keys = [f"{cid}/{k}" for cid, indices in sorted(drawn.items()) for k in indices]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys or [""], tf.string), tf.constant([1] * len(keys) or [0], tf.int32)
        ),
        default_value=0,
    )

    def wanted(example):
        key = tf.strings.join(
            [example["case_id"], tf.strings.as_string(example["slice_index"])], "/"
        )
        return table.lookup(key) > 0

    return wanted


def filter_cases(ds, case_ids, keep):
    """The slices of `case_ids` (`keep=True`), or all but them."""
    ids = tf.constant(sorted(case_ids) or [""])

    def wanted(example):
        hit = tf.reduce_any(tf.equal(example["case_id"], ids))
        return hit if keep else tf.logical_not(hit)

    return ds.filter(wanted)


def batch_rows(ds, spec, stored_context=0):
    """Batches of `spec.batch_slices` slices (of shards built with `stored_context`),
    each slice expanded into its rows (`RowPlan`), prefetched."""
    plan = RowPlan(
        spec.table,
        spec.inputs,
        spec.source,
        spec.every_row,
        spec.slice_offset,
        spec.context,
        stored_context,
    )
    ds = ds.enumerate().map(lambda n, example: {**example, "position": n})
    ds = ds.batch(spec.batch_slices, drop_remainder=spec.drop_remainder)
    ds = ds.map(
        lambda example: plan.expand(example, spec.return_meta),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


class RowPlan:
    """Expands a batch of parsed slices into rows of `table` (see `make_dataset`)."""

    def __init__(self, table, inputs, source, every_row, slice_offset, context=0, stored=0):
        self.inputs, self.context = inputs, context
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
        # Per row, the channels of its source's planes (single inputs).
        self.sources = tf.constant(
            [conditions.context_channels([index[r.available[0]]], context) for r in table],
            tf.int32,
        )
        # Where each modality's fed planes are among the stored ones.
        self.planes = conditions.context_channels(range(len(MODALITIES)), context, stored)
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
        # (rows, H, W, 4 * (2K + 1)): every modality's planes (K = 0: the slices)
        planes = stacked
        if self.context:
            planes = tf.gather(example[records.PLANES_KEY], self.planes, axis=3)
            planes = tf.repeat(planes, self.per_slice, axis=0)
        mask = tf.gather(self.masks, index)
        if self.inputs == "multi":
            fed = tf.repeat(mask, 2 * self.context + 1, axis=1)  # each modality's planes
            image = tf.where(fed[:, None, None, :] > 0, planes, conditions.FILL_VALUE)
        else:
            image = tf.gather(planes, tf.gather(self.sources, index), axis=3, batch_dims=1)
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
