"""Trains one DyGAN run into a run folder, resumable after a kill at any moment.

`train(config, data_dir, run_dir)` is what `python -m dygan_tf.fit` calls (and what a
KerasTuner HyperModel can call). The run folder holds config.json, run.json (data and
validation cases), history.csv, checkpoints/{last,best}, logs/ (TensorBoard) and, at
the end, generator.keras.
"""

import csv
import io
import json
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from dygan_tf import evaluation
from dygan_tf.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.builders import build_dygan
from dygan_tf.config import RunConfig
from dygan_tf.data import make_dataset
from dygan_tf.errors import UserError
from dygan_tf.manifest import split_cases

CONFIG = "config.json"
RUN_INFO = "run.json"
HISTORY = "history.csv"
GENERATOR = "generator.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
VALIDATION_FRACTION = 0.1  # of the training split's cases, at least one
LOSSES = ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss")


class TrainingDiverged(UserError):
    """A loss became NaN or infinite: the run stops, the last good checkpoint stays."""


def choose_validation_cases(data_dir, seed):
    """Case ids held out of the training split for validation (the test split is
    kept for evaluate). Needs at least two training cases."""
    cases = sorted(c["case_id"] for c in split_cases(data_dir, "train"))
    if len(cases) < 2:
        raise UserError(
            f"{data_dir}: the training split has {len(cases)} case(s); "
            "expected at least 2, one to hold out for validation"
        )
    count = max(1, round(len(cases) * VALIDATION_FRACTION))
    picked = np.random.default_rng(seed).choice(len(cases), count, replace=False)
    return sorted(cases[i] for i in picked)


def case_dataset(
    data_dir,
    train,
    case_ids,
    keep,
    batch_slices=1,
    shuffle=False,
    repeat=False,
    seed=None,
    return_meta=False,
    num_workers=1,
    worker_index=0,
):
    """The training split restricted to (`keep=True`) or without (`keep=False`) the
    slices of `case_ids`, batched as make_dataset batches (slice-major rows)."""
    rows = len(train.targets)
    ds = make_dataset(
        data_dir,
        "train",
        train.source,
        train.targets,
        batch_slices=1,
        shuffle=shuffle,
        repeat=repeat,
        seed=seed,
        return_meta=True,
        num_workers=num_workers,
        worker_index=worker_index,
    )
    ids = tf.constant(sorted(case_ids) or [""])

    def wanted(image, target, task, meta):
        hit = tf.reduce_any(tf.equal(meta["case_id"][0], ids))
        return hit if keep else tf.logical_not(hit)

    ds = ds.filter(wanted)
    if batch_slices > 1:  # whole slices are filtered, so regrouping keeps them intact
        ds = ds.unbatch().batch(batch_slices * rows)
    if not return_meta:
        ds = ds.map(lambda image, target, task, meta: (image, target, task))
    return ds.prefetch(tf.data.AUTOTUNE)


def count_slices(data_dir, case_ids, keep):
    cases = split_cases(data_dir, "train")
    return sum(len(c["slices"]) for c in cases if (c["case_id"] in case_ids) == keep)


def read_history(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_history(path, rows):
    if not rows:
        return
    fields = list(rows[0])
    for row in rows:
        fields += [k for k in row if k not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, out.getvalue())


def _same_run(saved, config):
    """Whether a run folder's config is `config` up to the number of epochs."""
    a, b = saved.to_dict(), config.to_dict()
    a["train"].pop("epochs"), b["train"].pop("epochs")
    return a == b


def prepare_run_dir(config, data_dir, run_dir):
    """Writes config.json and run.json for a new run, or checks them on a resume.
    Returns the validation case ids."""
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, CONFIG)
    info_path = os.path.join(run_dir, RUN_INFO)
    if os.path.exists(config_path) and os.path.exists(info_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                saved = RunConfig.from_dict(json.load(f))
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(
                f"{run_dir}: unreadable run files ({type(e).__name__}: {e}); use a new --out"
            ) from None
        if not _same_run(saved, config):
            raise UserError(
                f"--out {run_dir}: holds a run with another configuration "
                f"(see {config_path}); use a new --out or the same flags"
            )
        validation = info["validation_cases"]
    else:
        validation = choose_validation_cases(data_dir, config.train.seed)
        info = {"data": os.path.abspath(data_dir), "validation_cases": validation}
        write_json_atomic(info_path, info)
    write_json_atomic(config_path, config.to_dict())  # epochs may have grown
    return validation


def _grid(image, target, fake):
    """source | real | generated, one row per target, as a [1, H*T, 3W, 1] image in [0, 1]."""
    rows = [np.concatenate([image[i], target[i], fake[i]], axis=1) for i in range(len(image))]
    return ((np.concatenate(rows, axis=0)[None] + 1.0) / 2.0).clip(0, 1)


class EpochEnd(keras.callbacks.Callback):
    """Per epoch: validation, TensorBoard, history.csv, best and last checkpoints.

    The history row is written before the `last` checkpoint; a resume drops rows past
    the restored epoch, so a kill between the two never duplicates nor loses a row.
    """

    def __init__(self, run_dir, val_ds, targets, checkpoint, last, best, history, writer):
        super().__init__()
        self.run_dir, self.val_ds, self.targets = run_dir, val_ds, targets
        self.checkpoint, self.last, self.best = checkpoint, last, best
        self.history, self.writer = history, writer
        scores = [float(r["val_psnr_mean"]) for r in history if r.get("val_psnr_mean")]
        self.best_psnr = max(scores) if scores else -math.inf
        self.diverged = None
        self.grid_batch = next(iter(val_ds))

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if not np.isfinite(float(v))}
        if bad and self.diverged is None:
            self.diverged = (batch, bad)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged is not None:
            return
        gan = self.model
        scores = evaluation.score_generator(
            gan.generator, self.val_ds, self.targets, metrics=("psnr", "ssim")
        )
        lr = float(keras.ops.convert_to_numpy(gan.g_optimizer.learning_rate))
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in LOSSES}, "lr": lr}
        for t in self.targets:
            row[f"val_psnr_{t}"] = scores[t]["psnr"]
            row[f"val_ssim_{t}"] = scores[t]["ssim"]
        row["val_psnr_mean"] = float(np.mean([scores[t]["psnr"] for t in self.targets]))
        row["val_ssim_mean"] = float(np.mean([scores[t]["ssim"] for t in self.targets]))
        image, target, task, _ = self.grid_batch
        fake = gan.generator({"image": image, "task": task}, training=False).numpy()
        with self.writer.as_default(step=epoch + 1):
            for k in LOSSES:
                tf.summary.scalar(f"loss/{k}", row[k])
            tf.summary.scalar("learning_rate", lr)
            for k, v in row.items():
                if k.startswith("val_"):
                    tf.summary.scalar(k.replace("val_", "val/", 1), v)
            tf.summary.image(
                "val/source_real_generated",
                _grid(image.numpy(), target.numpy(), fake),
                step=epoch + 1,
            )
        self.writer.flush()
        self.checkpoint.epoch.assign(epoch + 1)
        if row["val_psnr_mean"] > self.best_psnr:
            self.best_psnr = row["val_psnr_mean"]
            self.best.save(checkpoint_number=epoch + 1)
        self.history.append(row)
        write_history(os.path.join(self.run_dir, HISTORY), self.history)
        self.last.save(checkpoint_number=epoch + 1)
        print(
            f"epoch {epoch + 1}: val PSNR "
            + ", ".join(f"{t} {scores[t]['psnr']:.2f}" for t in self.targets)
            + f" dB (mean {row['val_psnr_mean']:.2f}; best {self.best_psnr:.2f})",
            flush=True,
        )


class RunState:
    """What a training loop needs: the model, its checkpoints, history and start epoch."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def open_run(
    config, data_dir, run_dir, strategy, steps_per_epoch=None, write_dir=None, restore_from=None
):
    """Builds the model under `strategy` and restores the last checkpoint, if any.

    Every replica step consumes batch_slices slices per replica, so one pass over the
    training slices takes ceil(slices / (batch_slices * replicas)) steps. `write_dir`
    (default `run_dir`) receives checkpoints; `restore_from` (default `write_dir`) is the
    run folder whose last checkpoint is restored: multi-worker non-chiefs write to a
    scratch folder but resume from the chief's checkpoints.
    """
    train_cfg = config.train
    write_dir = write_dir or run_dir
    if write_dir == run_dir:
        validation = prepare_run_dir(config, data_dir, run_dir)
    else:  # deterministic from the seed: the same cases the chief records
        validation = choose_validation_cases(data_dir, train_cfg.seed)
    n_train = count_slices(data_dir, validation, keep=False)
    if n_train == 0:
        raise UserError(
            f"{data_dir}: no training slices left after holding out {validation} for validation"
        )
    global_slices = train_cfg.batch_slices * strategy.num_replicas_in_sync
    steps = steps_per_epoch or math.ceil(n_train / global_slices)
    keras.utils.set_random_seed(train_cfg.seed)
    with strategy.scope():
        gan = build_dygan(config, steps_per_epoch=steps)
    checkpoint = tf.train.Checkpoint(
        generator=gan.generator,
        discriminator=gan.discriminator,
        g_optimizer=gan.g_optimizer,
        d_optimizer=gan.d_optimizer,
        epoch=tf.Variable(0, dtype=tf.int64),
    )
    ckpt_dir = os.path.join(write_dir, CHECKPOINTS)
    last = tf.train.CheckpointManager(checkpoint, os.path.join(ckpt_dir, "last"), 1)
    best = tf.train.CheckpointManager(checkpoint, os.path.join(ckpt_dir, "best"), 1)
    history_path = os.path.join(run_dir, HISTORY)
    history = read_history(history_path)
    latest = tf.train.latest_checkpoint(
        os.path.join(restore_from or write_dir, CHECKPOINTS, "last")
    )
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        start = int(checkpoint.epoch.numpy())
        history = [r for r in history if int(r["epoch"]) <= start]
        print(
            f"resuming at epoch {start + 1} ({start} of {train_cfg.epochs} finished, "
            f"from {latest})",
            flush=True,
        )
    else:
        start, history = 0, []
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
    )


def diverged_error(callback, run):
    batch, bad = callback.diverged
    return TrainingDiverged(
        f"training diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} at "
        f"step {batch + 1} of epoch {int(run.checkpoint.epoch.numpy()) + 1}; the last "
        f"good checkpoint is in {run.last.directory}; try a lower --lr"
    )


def train(config, data_dir, run_dir, steps_per_epoch=None, strategy=None, verbose=None):
    """Trains (or resumes) `config` on `data_dir` into `run_dir`; returns the generator.

    `steps_per_epoch` defaults to one pass over the training slices; `strategy` is a
    tf.distribute strategy whose scope builds the model (default: the current one);
    each step takes batch_slices slices per replica (the global batch).
    """
    train_cfg = config.train
    strategy = strategy or tf.distribute.get_strategy()
    run = open_run(config, data_dir, run_dir, strategy, steps_per_epoch)
    gan, start, steps = run.gan, run.start, run.steps
    if start < train_cfg.epochs:
        train_ds = case_dataset(
            data_dir,
            train_cfg,
            run.validation,
            keep=False,
            batch_slices=run.global_slices,
            shuffle=True,
            repeat=True,
            seed=train_cfg.seed + start,
        )
        val_ds = case_dataset(
            data_dir, train_cfg, run.validation, keep=True, batch_slices=1, return_meta=True
        )
        writer = tf.summary.create_file_writer(os.path.join(run_dir, LOGS))
        callback = EpochEnd(
            run_dir,
            val_ds,
            train_cfg.targets,
            run.checkpoint,
            run.last,
            run.best,
            run.history,
            writer,
        )
        print(
            f"training {run_dir}: {run.n_train} slices x {len(train_cfg.targets)} targets, "
            f"{steps} steps per epoch of {run.global_slices} slice(s) on "
            f"{strategy.num_replicas_in_sync} replica(s), epochs {start + 1}..{train_cfg.epochs}; "
            f"validation cases {run.validation}",
            flush=True,
        )
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        gan.fit(
            train_ds,
            epochs=train_cfg.epochs,
            initial_epoch=start,
            steps_per_epoch=steps,
            callbacks=[callback],
            verbose=verbose,
            shuffle=False,
        )  # the dataset shuffles itself
        writer.close()
        if callback.diverged is not None:
            raise diverged_error(callback, run)
    save_generator(gan.generator, run_dir)
    return gan.generator


def save_generator(generator, run_dir):
    with atomic_path(os.path.join(run_dir, GENERATOR)) as tmp:
        generator.save(tmp)
