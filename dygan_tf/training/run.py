"""Trains one DyGAN run into a run folder, resumable after a kill at any moment.

`train(config, shards, run)` is what `python -m dygan_tf.fit` calls; the run
folder's layout lives in `dygan_tf.run_folder.files`, the per-epoch work (validation,
history and TensorBoard, checkpoints) in `dygan_tf.training.callbacks`. `open_run` and
the datasets (`training_dataset`, `validation_dataset`) are shared with the
multi-worker loop and the λ search.
"""

import dataclasses
import functools
import math

import keras
import numpy as np
import tensorflow as tf

from dygan_tf.config import conditions
from dygan_tf.config.conditions import SOURCE_ANY
from dygan_tf.data import epoch_draw
from dygan_tf.data.pipeline import data_loss_named, make_dataset
from dygan_tf.data.shard_folder import open_shards
from dygan_tf.models.builders import build_dygan
from dygan_tf.run_folder import checkpoints
from dygan_tf.run_folder import files as run_files
from dygan_tf.run_folder.folder import RunFolder, open_run_folder
from dygan_tf.training import callbacks as run_callbacks
from dygan_tf.utils import backend
from dygan_tf.utils.errors import UserError

VALIDATION_FRACTION = 0.1  # of the training split's cases, at least one
_EPOCH_SEEDS = 1_000_003  # epoch e of seed s shuffles with s * _EPOCH_SEEDS + e
# From shards of every brain slice, validation reads this many slices of each held-out
# case, one fixed draw (seed 0): every slice of two cases at 28 rows a slice took about
# 2 min an epoch at 96 px on 2 busy CPU cores, against 6 s for a 40-step epoch.
VALIDATION_SLICES = 16


class TrainingDiverged(UserError):
    """A loss became NaN or infinite: the run stops, the last good checkpoint stays."""


def choose_validation_cases(shards, seed):
    """Case ids held out of the training split of `shards` (a `ShardFolder` or its
    path) for validation (the test split is kept for evaluate). Needs at least two
    training cases."""
    shards = open_shards(shards)
    cases = sorted(c["case_id"] for c in shards.split_cases("train"))
    if len(cases) < 2:
        raise UserError(
            f"{shards.path}: the training split has {len(cases)} case(s); "
            "expected at least 2, one to hold out for validation"
        )
    count = max(1, round(len(cases) * VALIDATION_FRACTION))
    picked = np.random.default_rng(seed).choice(len(cases), count, replace=False)
    return sorted(cases[i] for i in picked)


def count_slices(shards, case_ids, keep):
    """Training slices one epoch draws from `case_ids` (`keep`) or from every other
    case: all of theirs, or from shards of every brain slice the same number from each
    (`dygan_tf.data.epoch_draw`)."""
    shards = open_shards(shards)
    return epoch_draw.epoch_slices(shards.manifest, _cases(shards, case_ids, keep))


def _cases(shards, case_ids, keep):
    """The training split's case entries of `case_ids` (`keep`) or of every other case."""
    return [c for c in shards.split_cases("train") if (c["case_id"] in case_ids) == keep]


@dataclasses.dataclass
class RunState:
    """What a training loop needs: the model, its checkpoints, history and start epoch."""

    gan: keras.Model
    checkpoint: checkpoints.Checkpoint  # the networks, both optimizers and the epoch
    last: checkpoints.CheckpointManager | None  # of checkpoints/last (None: not the writer)
    best: checkpoints.CheckpointManager | None  # and of checkpoints/best
    history: list
    start: int  # epochs already finished
    steps: int  # per epoch
    validation: list  # held-out case ids
    n_train: int  # training slices
    global_slices: int  # slices per step over all replicas
    folder: RunFolder


def open_run(config, shards, folder, strategy, steps_per_epoch=None, chief=True):
    """Builds the model under `strategy` and restores the last checkpoint of `folder`
    (a `RunFolder`, or its path), if any; `shards` is a `ShardFolder` (or its path).

    Every replica step consumes batch_slices slices per replica, so one pass over the
    training slices takes ceil(slices / (batch_slices * replicas)) steps. Only the
    `chief` writes the run folder (config.json, run.json, checkpoints); another
    worker of a multi-worker run resumes from the chief's checkpoints and writes none.
    """
    shards, folder = open_shards(shards), open_run_folder(folder)
    validation = _held_out_cases(config, shards, folder, chief)
    n_train = count_slices(shards, validation, keep=False)
    if n_train == 0:
        raise UserError(
            f"{shards.path}: no training slices left after holding out {validation} for validation"
        )
    global_slices = config.train.batch_slices * strategy.num_replicas_in_sync
    steps = steps_per_epoch or math.ceil(n_train / global_slices)
    gan = _build(config, strategy, steps)
    checkpoint = checkpoints.Checkpoint(
        generator=gan.generator,
        discriminator=gan.discriminator,
        g_optimizer=gan.g_optimizer,
        d_optimizer=gan.d_optimizer,
    )
    start, history = _resume(checkpoint, folder, config.train.epochs)
    last = best = None
    if chief:
        last, best = (
            checkpoints.CheckpointManager(checkpoint, directory, keep)
            for directory, keep in (
                (folder.checkpoint_dir(), checkpoints.KEEP_LAST),
                (folder.checkpoint_dir(run_files.BEST), 1),
            )
        )
    return RunState(
        gan=gan,
        checkpoint=checkpoint,
        last=last,
        best=best,
        history=history,
        start=start,
        steps=steps,
        validation=validation,
        n_train=n_train,
        global_slices=global_slices,
        folder=folder,
    )


def _held_out_cases(config, shards, folder, chief):
    """The validation cases: recorded in a new run folder (the chief's) or checked
    against the one it resumes; deterministic from the seed, so every worker agrees."""

    def choose():
        return choose_validation_cases(shards, config.train.seed)

    if not chief:
        return choose()
    return folder.prepare(config, shards, choose, backend=backend.name())


def _build(config, strategy, steps):
    """The DyGAN of `config`, its variables created under `strategy`, seeded."""
    keras.utils.set_random_seed(config.train.seed)
    with strategy.scope():
        return build_dygan(config, steps_per_epoch=steps)


def _resume(checkpoint, folder, epochs):
    """Restores the run folder's last checkpoint into `checkpoint`; returns (epochs already
    finished, the history rows up to there): (0, []) for a fresh start."""
    history = folder.read_history()
    latest = checkpoints.restore_last(checkpoint, folder, history)
    if not latest:
        return 0, []
    start = int(checkpoint.epoch.numpy())
    print(
        f"resuming at epoch {start + 1} ({start} of {epochs} finished, from {latest})",
        flush=True,
    )
    return start, [r for r in history if int(r["epoch"]) <= start]


def diverged_error(stop, run):
    """The TrainingDiverged error for a `StopOnDivergence` that fired (its batch index
    is None when only the epoch's mean losses were seen)."""
    batch, bad = stop.diverged
    where = "during" if batch is None else f"at step {batch + 1} of"
    return TrainingDiverged(
        f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} {where} "
        f"epoch {int(run.checkpoint.epoch.numpy()) + 1}; the last good checkpoint is in "
        f"{run.folder.checkpoint_dir()}; try a lower learning rate"
    )


def epoch_callbacks(run, folder, val_ds, targets, writer, verbose=True):
    """[stop on divergence, validation scores, history + TensorBoard, checkpoints]:
    the per-epoch work of a run, in the order it must happen."""
    scores = [float(r["val_psnr_mean"]) for r in run.history if r.get("val_psnr_mean")]
    return [
        run_callbacks.StopOnDivergence(),
        run_callbacks.ValidationScores(val_ds, targets),
        run_callbacks.HistoryWriter(folder, run.history, writer, next(iter(val_ds))),
        run_callbacks.EpochCheckpoints(
            run.checkpoint, run.last, run.best, max(scores, default=-math.inf), verbose
        ),
    ]


def training_dataset(
    shards,
    config,
    validation,
    batch_slices,
    steps_per_epoch,
    start_epoch=0,
    num_workers=1,
    worker_index=0,
):
    """The training split without the held-out cases, as `steps_per_epoch` batches of
    `batch_slices` slices for each epoch from `start_epoch` up to `config.train.epochs`.

    In the paper's mode a slice gives one row per target; with `--source any` or
    `--inputs multi` it gives 3 rows that cycle through the run's row table
    (`dygan_tf.config.conditions.row_table`), the cycle running on across epochs, so every
    task (or target and available set) is trained equally often; a multi-source run's
    `target_weights` repeat each target's rows in the cycle
    (`dygan_tf.config.conditions.training_cycle`).
    Epoch e's batches depend only on the seed and e (its own shuffle of the shards and
    slices), so a run resumed at epoch e sees exactly what an uninterrupted run would.
    From shards of every brain slice, epoch e reads the same number of slices from each
    case, drawn with that epoch's seed (`dygan_tf.data.epoch_draw`).
    """
    train_cfg = config.train
    every_row = config.model.inputs == "single" and train_cfg.source != SOURCE_ANY
    cycle = conditions.training_cycle(
        config.model.inputs, train_cfg.source, train_cfg.targets, train_cfg.target_weights
    )
    shards = open_shards(shards)
    per_case = epoch_draw.per_case(shards.manifest, _cases(shards, validation, keep=False))
    epochs = [
        make_dataset(
            shards,
            "train",
            source=train_cfg.source,
            targets=train_cfg.targets,
            case_ids=validation,
            keep_cases=False,
            batch_slices=batch_slices,
            shuffle=True,
            repeat=True,
            seed=train_cfg.seed * _EPOCH_SEEDS + e,
            num_workers=num_workers,
            worker_index=worker_index,
            inputs=config.model.inputs,
            every_row=every_row,
            slice_offset=e * steps_per_epoch * batch_slices,
            rows=cycle,
            per_case=per_case,
            context=config.model.context,
            # The stream repeats, so no batch is short: a static batch size lets the
            # train step unroll the per-example DyConv loop instead of a tf.map_fn.
            drop_remainder=True,
        ).take(steps_per_epoch)
        for e in range(start_epoch, max(train_cfg.epochs, start_epoch + 1))
    ]
    return functools.reduce(lambda a, b: a.concatenate(b), epochs).prefetch(tf.data.AUTOTUNE)


def validation_dataset(shards, config, validation):
    """The held-out cases' slices, one slice (every row of the run's table) per batch,
    with meta: every slice of the paper's shards; from shards of every brain slice,
    `VALIDATION_SLICES` of each case, the same draw every epoch and every run."""
    shards = open_shards(shards)
    all_brain = epoch_draw.kind_of(shards.manifest) == epoch_draw.PER_CASE
    return make_dataset(
        shards,
        "train",
        source=config.train.source,
        targets=config.train.targets,
        case_ids=validation,
        keep_cases=True,
        return_meta=True,
        inputs=config.model.inputs,
        context=config.model.context,
        per_case=VALIDATION_SLICES if all_brain else None,
        seed=0 if all_brain else None,
    )


def train(config, shards, folder, steps_per_epoch=None, strategy=None, verbose=None):
    """Trains (or resumes) `config` on `shards` into `folder`; returns the generator.

    Args:
        config: a `RunConfig` (see `dygan_tf.config.run_config`).
        shards: a `ShardFolder` (`dygan_tf.data.shard_folder`), or the path of a shard
            folder written by `dygan-build-tfrecords` (its manifest is read once).
        folder: a `RunFolder` (`dygan_tf.run_folder.folder`), or the path of the run
            folder (see `dygan_tf.run_folder.files`); a folder holding a run of
            the same config resumes at its first unfinished epoch.
        steps_per_epoch: default one pass over the training slices.
        strategy: a tf.distribute strategy whose scope builds the model (default: the
            current one); each step takes `batch_slices` slices per replica.
        verbose: 0 shows no progress (default: a bar per epoch on a terminal; in a log,
            a line every 30 s and one per epoch: `callbacks.FitProgress`).

    Returns:
        The trained generator (also saved as `folder`/generator.keras).
    """
    train_cfg = config.train
    if strategy is None:
        if backend.is_tensorflow():
            strategy = tf.distribute.get_strategy()
        else:
            from dygan_tf.training.backends import Devices

            strategy = Devices()
    shards, folder = open_shards(shards), open_run_folder(folder)
    run = open_run(config, shards, folder, strategy, steps_per_epoch)
    if run.start < train_cfg.epochs:
        with data_loss_named(shards, ["train"]):
            _fit_epochs(config, shards, folder, strategy, run, verbose)
    run.gan.finish_training()  # the weights' average, with --ema
    folder.save_generator(run.gan.generator)
    return run.gan.generator


def rows_text(config):
    """How many rows a slice gives: "3 targets", or "3 of 12 tasks a slice" (cycling)."""
    inputs, train_cfg = config.model.inputs, config.train
    table = conditions.row_table(inputs, train_cfg.source, train_cfg.targets)
    per = conditions.rows_per_slice(inputs, train_cfg.source, len(table))
    if per == len(table):
        return f"{per} targets"
    what = "tasks" if inputs == "single" else "target x available-set rows"
    weights = train_cfg.target_weights
    if weights and set(weights) != {1}:
        drawn = ", ".join(f"{t} x{w}" for t, w in zip(train_cfg.targets, weights))
        what += f" ({drawn})"
    return f"{per} of {len(table)} {what} a slice"


def choose_dyconv_methods(config, run, strategy):
    """Each "auto" DyConv's method on this machine, before the step is traced
    (`layers.dyconv_dispatch.measure`): the shipped table on a TensorFlow CPU unless
    DYGAN_MEASURE_METHODS=1; elsewhere measured per layer on first use and cached, unless
    DYGAN_MEASURE_METHODS=0."""
    from dygan_tf.layers import dyconv_dispatch

    train_cfg = config.train
    table = conditions.row_table(config.model.inputs, train_cfg.source, train_cfg.targets)
    rows = train_cfg.batch_slices * conditions.rows_per_slice(
        config.model.inputs, train_cfg.source, len(table)
    )
    # TensorFlow traces one replica's rows; JAX the global batch (DataParallel).
    if not backend.is_tensorflow():
        rows *= strategy.num_replicas_in_sync
    return dyconv_dispatch.measure(run.gan.dyconv_input_shapes(rows))


def _fit_epochs(config, shards, folder, strategy, run, verbose):
    """Keras `fit` over the unfinished epochs of `run`, with the per-epoch callbacks."""
    train_cfg = config.train
    train_ds = training_dataset(
        shards, config, run.validation, run.global_slices, run.steps, run.start
    )
    val_ds = validation_dataset(shards, config, run.validation)
    writer = tf.summary.create_file_writer(folder.logs)
    if verbose is None:
        verbose = 1
    progress = run_callbacks.FitProgress(train_cfg.epochs, run.steps, enabled=bool(verbose))
    callbacks = epoch_callbacks(run, folder, val_ds, train_cfg.targets, writer)
    print(
        f"training {folder}: {run.n_train} slices x {rows_text(config)}, "
        f"{run.steps} steps per epoch of {run.global_slices} slice(s) on "
        f"{strategy.num_replicas_in_sync} replica(s), epochs "
        f"{run.start + 1}..{train_cfg.epochs}; validation cases {run.validation}",
        flush=True,
    )
    choose_dyconv_methods(config, run, strategy)
    try:
        run.gan.fit(
            train_ds,
            epochs=train_cfg.epochs,
            initial_epoch=run.start,
            steps_per_epoch=run.steps,
            callbacks=[progress, *callbacks],  # the progress first: its line ends first
            verbose=0,  # FitProgress shows it
            shuffle=False,  # the dataset shuffles itself
        )
    finally:
        writer.close()
    if callbacks[0].diverged is not None:
        raise diverged_error(callbacks[0], run)
