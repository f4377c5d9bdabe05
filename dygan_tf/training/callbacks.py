"""Single-purpose Keras callbacks of a training run, used alike by `fit`, the λ search
and the multi-worker loop.

Keras hands every callback the same `logs` dict at the end of an epoch, in list order,
so `ValidationScores` goes first: it adds `val_psnr_<target>`, `val_ssim_<target>`,
`val_psnr_mean` and `val_ssim_mean`, which `HistoryWriter`, `EpochCheckpoints` (and
KerasTuner's own callbacks) then read. After a non-finite loss, `StopOnDivergence`
stops training and the later callbacks skip that epoch: nothing diverged is scored,
written or saved.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from dygan_tf.config import conditions
from dygan_tf.evaluation import slice_scores
from dygan_tf.models.losses import LOSS_NAMES
from dygan_tf.run_folder.folder import open_run_folder

LOSSES = LOSS_NAMES  # the train step's logged terms (models/losses.py)
OBJECTIVE = "val_psnr_mean"
LOG_EVERY_S = 30.0  # FitProgress's plain lines in a log: one every 30 s within an epoch


def losses_finite(logs):
    """Whether every loss in `logs` is a finite number."""
    return all(np.isfinite(float(logs[k])) for k in LOSSES if k in (logs or {}))


class FitProgress(keras.callbacks.Callback):
    """Training's progress as `dygan_tf.utils.progress` shows every loop: a bar per epoch
    on a terminal; in a log a line every `every_s` seconds (step, losses, time left)
    and one at each epoch's end (steps, time, losses). It goes first in the list, so an
    epoch's bar is finished before the other callbacks print."""

    def __init__(self, epochs, steps, enabled=True, every_s=None):
        super().__init__()
        self.epochs, self.steps, self.enabled = epochs, steps, enabled
        self.every_s = LOG_EVERY_S if every_s is None else every_s
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from dygan_tf.utils.progress import Progress

        self.bar = Progress(
            self.steps,
            unit="step",
            enabled=self.enabled,
            label=f"epoch {epoch + 1}/{self.epochs}",
            every_s=self.every_s,
        )

    def on_train_batch_end(self, batch, logs=None):
        self.bar.add(batch + 1 - self.bar.done, _losses(logs))

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close(_losses(logs))
            self.bar = None


def _losses(logs):
    return {k: float(logs[k]) for k in LOSSES if k in (logs or {})}


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first batch whose losses are not finite.

    `diverged` is then `(batch index, {name: value})` of that batch, else None.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if not np.isfinite(float(v))}
        if bad and self.diverged is None:
            self.diverged = (batch, bad)
            self.model.stop_training = True


class ValidationScores(keras.callbacks.Callback):
    """Per epoch: PSNR and SSIM of `model.generator` (its weights' moving average with
    `--ema`) per target on `val_ds`, added to the epoch's `logs` (and kept in `last`).

    Args:
        val_ds: batches `(image, target, task, meta)` as `make_dataset(...,
            return_meta=True)` yields them (meta gives each row's target and masks).
        targets: the target modalities, e.g. `("flair", "t1", "t1ce")`.
    """

    def __init__(self, val_ds, targets):
        super().__init__()
        self.val_ds, self.targets = val_ds, tuple(targets)
        self.last = None

    def scores(self, generator):
        """The validation row of `generator`: {val_psnr_<t>, val_ssim_<t>, ..._mean}."""
        scores = slice_scores.score_generator(
            generator, self.val_ds, self.targets, metrics=("psnr", "ssim")
        )
        row = {}
        for t in self.targets:
            row[f"val_psnr_{t}"] = scores[t]["psnr"]
            row[f"val_ssim_{t}"] = scores[t]["ssim"]
        row[OBJECTIVE] = float(np.mean([scores[t]["psnr"] for t in self.targets]))
        row["val_ssim_mean"] = float(np.mean([scores[t]["ssim"] for t in self.targets]))
        return row

    def on_epoch_end(self, epoch, logs=None):
        if not losses_finite(logs):
            return
        with self.model.averaged_generator() as generator:
            self.last = self.scores(generator)
        if logs is not None:
            logs.update(self.last)


def _grid(image, target, fake):
    """source | real | generated, one row per target, as a [1, H*T, 3W, 1] image in [0, 1]."""
    rows = [np.concatenate([image[i], target[i], fake[i]], axis=1) for i in range(len(image))]
    return ((np.concatenate(rows, axis=0)[None] + 1.0) / 2.0).clip(0, 1)


class HistoryWriter(keras.callbacks.Callback):
    """Per epoch: one row (losses, learning rate, validation scores) appended to the
    run folder's history.csv, the same figures as TensorBoard scalars, and a
    source | real | generated image of the first validation batch.

    Args:
        folder: the `RunFolder` (or its path) whose history.csv is written.
        history: the rows already there (they are kept; a resume passes the rows up
            to the restored epoch).
        writer: a `tf.summary` file writer (the run's logs/ folder).
        grid_batch: `(image, target, task, ...)` drawn in TensorBoard each epoch.
    """

    def __init__(self, folder, history, writer, grid_batch=None):
        super().__init__()
        self.folder, self.history, self.writer = open_run_folder(folder), history, writer
        self.grid_batch = grid_batch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not losses_finite(logs):
            return
        lr = float(keras.ops.convert_to_numpy(self.model.g_optimizer.learning_rate))
        row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in LOSSES}, "lr": lr}
        row.update({k: float(v) for k, v in logs.items() if k.startswith("val_")})
        with self.writer.as_default(step=epoch + 1):
            for k in LOSSES:
                tf.summary.scalar(f"loss/{k}", row[k])
            tf.summary.scalar("learning_rate", lr)
            for k, v in row.items():
                if k.startswith("val_"):
                    tf.summary.scalar(k.replace("val_", "val/", 1), v)
            if self.grid_batch is not None:
                image, target, task = self.grid_batch[:3]
                with self.model.averaged_generator() as generator:
                    fake = generator(
                        {"image": np.asarray(image), "task": np.asarray(task)}, training=False
                    )
                shown = conditions.source_preview(image, task)  # one channel of a multi input
                # convert_to_numpy: on PyTorch the output is a tensor that keeps its graph
                grid = _grid(shown, np.asarray(target), keras.ops.convert_to_numpy(fake))
                tf.summary.image("val/source_real_generated", grid)
        self.writer.flush()
        self.history.append(row)
        self.folder.write_history(self.history)


class EpochCheckpoints(keras.callbacks.Callback):
    """Per epoch: the checkpoint's epoch counter, `best` when `val_psnr_mean` improves,
    then `last`.

    Runs after `HistoryWriter`: a kill between the history row and the `last`
    checkpoint leaves a row past the restored epoch, which a resume drops, so no row
    is ever lost or duplicated. A failed write (full disk) stops training with one
    `WriteError` line naming the checkpoint; the previous ones stay restorable.

    Args:
        checkpoint: a `dygan_tf.run_folder.checkpoints.Checkpoint` (with its `epoch`).
        last, best: its `CheckpointManager`s of checkpoints/last and /best; None on a
            worker that writes no checkpoints (a multi-worker run's non-chief).
        best_score: the best `val_psnr_mean` so far (from the history on a resume).
    """

    def __init__(self, checkpoint, last, best, best_score=-math.inf, verbose=True):
        super().__init__()
        self.checkpoint, self.last, self.best = checkpoint, last, best
        self.best_score, self.verbose = best_score, verbose

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not losses_finite(logs):
            return
        self.checkpoint.epoch.assign(epoch + 1)
        score = logs.get(OBJECTIVE)
        if score is not None and score > self.best_score:
            self.best_score = float(score)
            if self.best is not None:
                self.best.save(epoch + 1)
        if self.last is not None:
            self.last.save(epoch + 1)
        if self.verbose and score is not None:
            targets = [k[len("val_psnr_") :] for k in logs if k.startswith("val_psnr_")]
            targets = [t for t in targets if t != "mean"]
            print(
                f"epoch {epoch + 1}: val PSNR "
                + ", ".join(f"{t} {float(logs[f'val_psnr_{t}']):.2f}" for t in targets)
                + f" dB (mean {float(score):.2f}; best {self.best_score:.2f})",
                flush=True,
            )
