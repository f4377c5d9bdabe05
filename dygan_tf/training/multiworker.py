"""Training across machines: MultiWorkerMirroredStrategy with a loop of our own.

Keras 3 `fit()` does not work under MultiWorkerMirroredStrategy (keras#20585,
tensorflow#72388), so this loop drives the same `DyGAN.train_step` through
`strategy.run`. Each worker reads its own shard files; the chief writes the run folder
(checkpoints, history.csv, TensorBoard, generator.keras) and every other worker writes
to a scratch folder that is deleted at the end. A restarted worker resumes from the
chief's last checkpoint, so the run folder must be on storage all workers can read.
"""

import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dygan_tf.data import shard_check
from dygan_tf.run_folder import files as run_folder
from dygan_tf.training import run as training


def is_chief(strategy):
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    return (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def train_multiworker(config, data_dir, run_dir, strategy, steps_per_epoch=None):
    """Trains (or resumes) `config` on all workers of `strategy`; returns the generator."""
    train_cfg = config.train
    chief = is_chief(strategy)
    scratch = (
        None
        if chief
        else tempfile.mkdtemp(prefix=f"dygan-worker{strategy.cluster_resolver.task_id}-")
    )
    write_dir = run_dir if chief else scratch
    try:
        run = training.open_run(
            config,
            data_dir,
            run_dir,
            strategy,
            steps_per_epoch,
            write_dir=write_dir,
            restore_from=run_dir,
        )
        gan = run.gan
        if run.start < train_cfg.epochs:
            try:
                _loop(config, data_dir, run_dir, write_dir, strategy, run)
            except tf.errors.DataLossError as e:  # a shard went bad after the up-front check
                raise shard_check.data_loss_error(data_dir, ["train"], e) from None
        gan.finish_training()  # the weights' average, with --ema
        if chief:
            run_folder.save_generator(gan.generator, run_dir)
        return gan.generator
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _loop(config, data_dir, run_dir, write_dir, strategy, run):
    train_cfg = config.train
    gan = run.gan

    def dataset_fn(context):
        # Shard files are split across workers; each replica gets batch_slices slices.
        return training.training_dataset(
            data_dir,
            config,
            run.validation,
            train_cfg.batch_slices,
            run.steps,
            run.start,
            num_workers=context.num_input_pipelines,
            worker_index=context.input_pipeline_id,
        )

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    @tf.function
    def step(iterator):
        logs = strategy.run(gan.train_step, args=(next(iterator),))
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in logs.items()
        }

    val_ds = training.validation_dataset(data_dir, config, run.validation)
    writer = tf.summary.create_file_writer(run_folder.path(write_dir, run_folder.LOGS))
    # The same per-epoch callbacks as fit; the chief's history lives in run_dir, a
    # non-chief keeps a throwaway copy in its scratch folder.
    callbacks = training.epoch_callbacks(run, write_dir, val_ds, train_cfg.targets, writer)
    stop = callbacks[0]
    epoch_end = keras.callbacks.CallbackList(callbacks, model=gan)
    print(
        f"worker {strategy.cluster_resolver.task_type}:{strategy.cluster_resolver.task_id} "
        f"of {strategy.num_replicas_in_sync} replicas: {run.steps} steps per epoch, "
        f"epochs {run.start + 1}..{train_cfg.epochs}",
        flush=True,
    )
    try:
        for epoch in range(run.start, train_cfg.epochs):
            for metric in gan.metrics:
                metric.reset_state()
            for _ in range(run.steps):
                logs = step(iterator)
            logs = {k: float(v) for k, v in logs.items()}
            print(
                f"epoch {epoch + 1}: " + " - ".join(f"{k}: {v:.6f}" for k, v in logs.items()),
                flush=True,
            )
            if not all(np.isfinite(list(logs.values()))):
                # The loop sees the epoch's mean losses only, not the first bad step.
                stop.diverged = (None, {k: v for k, v in logs.items() if not np.isfinite(v)})
                raise training.diverged_error(stop, run)
            epoch_end.on_epoch_end(epoch, logs)
    finally:
        writer.close()
