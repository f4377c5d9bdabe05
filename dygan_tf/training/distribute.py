"""Training on several devices and machines: choosing a tf.distribute strategy, and the
loop that trains across machines.

`make_strategy("auto")` mirrors over all visible GPUs when there are several, else runs
on one device. `--cpu-replicas N` splits the CPU into N logical devices so the
multi-replica code path runs (and is tested) on a machine without GPUs.

Across machines: MultiWorkerMirroredStrategy with a loop of our own.

Keras 3 `fit()` does not work under MultiWorkerMirroredStrategy (keras#20585,
tensorflow#72388), so this loop drives the same `DyGAN.train_step` through
`strategy.run`. Each worker reads its own shard files; the chief writes the run folder
(checkpoints, history.csv, TensorBoard, generator.keras); every other worker writes no
checkpoint, and its throwaway history and TensorBoard go to a scratch folder that is
deleted at the end. A restarted worker resumes from the chief's last checkpoint, so the
run folder must be on storage all workers can read.
Before the first collective op of training, `check_workers` has every worker check what
it needs and exchange the results, so a problem on one stops all with the same line.
"""

import hashlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from dygan_tf.config.run_config import STRATEGIES
from dygan_tf.data import shard_check
from dygan_tf.data.pipeline import data_loss_named
from dygan_tf.data.shard_folder import open_shards
from dygan_tf.run_folder import files as run_files
from dygan_tf.run_folder.folder import open_run_folder
from dygan_tf.training import run as training_run
from dygan_tf.utils.errors import UserError

MESSAGE_BYTES = 1024  # of a worker's error line in the start-up exchange
DIGESTS = ("settings", "shards", "checkpoints")  # what every worker must see alike
# How a collective op ends when a peer has gone (its socket closed, the op aborted).
PEER_LOST = (
    tf.errors.UnavailableError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.DeadlineExceededError,
)


def is_chief(strategy):
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None or task_type == "chief":
        return True
    return (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def train_multiworker(
    config, data_dir, run_dir, strategy, steps_per_epoch=None, start_problem=None
):
    """Trains (or resumes) `config` on all workers of `strategy`; returns the generator.

    `check_workers` runs first: a problem on any worker stops every worker with the same
    one-line UserError, before the collective ops of training start. `start_problem`:
    this worker's error line from before (the command's own checks: its run-folder lock,
    the image size), reported through the same exchange."""
    train_cfg = config.train
    chief = is_chief(strategy)
    scratch = (
        None
        if chief
        else tempfile.mkdtemp(prefix=f"dygan-worker{strategy.cluster_resolver.task_id}-")
    )
    run_dir = open_run_folder(run_dir)
    write_dir = run_dir if chief else open_run_folder(scratch)
    data_dir = open_shards(data_dir)  # a ShardFolder: the manifest read once
    try:
        check_workers(config, data_dir, run_dir, strategy, steps_per_epoch, start_problem)
        run = training_run.open_run(config, data_dir, run_dir, strategy, steps_per_epoch, chief)
        gan = run.gan
        if run.start < train_cfg.epochs:
            with data_loss_named(data_dir, ["train"]):
                _loop(config, data_dir, run_dir, write_dir, strategy, run)
        gan.finish_training()  # the weights' average, with --ema
        if chief:
            run_dir.save_generator(gan.generator)
        return gan.generator
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _loop(config, data_dir, run_dir, write_dir, strategy, run):
    train_cfg = config.train
    gan = run.gan

    def dataset_fn(context):
        # Shard files are split across workers; each replica gets batch_slices slices.
        return training_run.training_dataset(
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

    val_ds = training_run.validation_dataset(data_dir, config, run.validation)
    writer = tf.summary.create_file_writer(write_dir.logs)
    # The same per-epoch callbacks as fit; the chief's history lives in run_dir, a
    # non-chief keeps a throwaway copy in its scratch folder.
    callbacks = training_run.epoch_callbacks(run, write_dir, val_ds, train_cfg.targets, writer)
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
                raise training_run.diverged_error(stop, run)
            epoch_end.on_epoch_end(epoch, logs)
    except PEER_LOST as e:  # another worker stopped: its own line says why
        names, index = _task_names(strategy)
        raise UserError(
            f"{names[index]}: lost contact with another worker in epoch {epoch + 1} "
            f"({type(e).__name__}); its own error line says why (restart every worker to "
            "resume from the last checkpoint)"
        ) from None
    finally:
        writer.close()


def worker_problem(config, data_dir, run_dir, chief, num_workers):
    """This worker's start-up checks: its error line, or None. Never raises a UserError:
    every worker must reach the exchange in `check_workers`, or the others would wait
    in it for a worker that has gone."""
    try:
        shards = open_shards(data_dir)
        files = shards.files("train")
        if len(files) < num_workers:
            raise UserError(
                f"{data_dir}: split 'train' has {len(files)} shard(s) for {num_workers} "
                "workers; expected at least one per worker: rebuild the shards with "
                f"--shards-per-split {num_workers} or more"
            )
        shard_check.check_shards(shards.path, "train", shards.manifest)  # once, cached
        training_run.choose_validation_cases(shards, config.train.seed)
        if chief:
            _check_run_folder(config, open_run_folder(run_dir))
    except UserError as e:
        return str(e)
    return None


def _check_run_folder(config, run_dir):
    """UserError unless the chief can write `run_dir` and it holds no other run."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as e:
        raise UserError(
            f"{run_dir}: the chief cannot write the run folder ({e.strerror or e}); it "
            "writes the checkpoints and history there"
        ) from None
    config_path = run_dir.file(run_files.CONFIG)
    if run_dir.has(run_files.CONFIG) and run_dir.has(run_files.RUN_INFO):
        if not run_files.same_run(run_dir.read_config(), config):
            raise UserError(
                f"{run_dir}: holds a run with another configuration (see {config_path}); "
                "use a new run folder or the same settings"
            )


def worker_digests(config, data_dir, run_dir, steps_per_epoch):
    """sha256 of what must be equal on every worker: the settings, the shards
    (manifest.json's record of them; the files are checked against it) and the
    checkpoints a worker sees in the run folder (it resumes from the chief's)."""

    def digest(value):
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()

    try:
        manifest = open_shards(data_dir).manifest
        shards = {k: manifest.get(k) for k in ("image_size", "compression", "splits")}
    except UserError:
        shards = None  # the worker's own error line says why
    last = open_run_folder(run_dir).checkpoint_dir()
    try:  # the checkpoint files' names and sizes
        checkpoints = sorted((n, os.path.getsize(os.path.join(last, n))) for n in os.listdir(last))
    except OSError:
        checkpoints = None
    settings = {"config": config.to_dict(), "steps_per_epoch": steps_per_epoch}
    return {
        "settings": digest(settings),
        "shards": digest(shards),
        "checkpoints": digest(checkpoints),
    }


def _encode(index, problem, digests):
    text = (problem or "").encode("utf-8")[:MESSAGE_BYTES]
    message = np.zeros(MESSAGE_BYTES, np.int32)
    message[: len(text)] = np.frombuffer(text, np.uint8)
    parts = [np.array([index, len(text)], np.int32), message]
    parts += [np.frombuffer(digests[k], np.uint8).astype(np.int32) for k in DIGESTS]
    return np.concatenate(parts)


def _decode(row):
    index, size = int(row[0]), int(row[1])
    message = bytes(row[2 : 2 + size].astype(np.uint8)).decode("utf-8", "ignore")
    rest = row[2 + MESSAGE_BYTES :].reshape(len(DIGESTS), -1)
    return index, message, {k: bytes(d.astype(np.uint8)) for k, d in zip(DIGESTS, rest)}


def exchange(strategy, row, name):
    """Every worker's `row` (int32 vectors of one length, the task's index first), by
    task index: one all-gather. `name` is this task's, for the error line."""
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(row[None])
    )
    try:
        gathered = strategy.gather(values, axis=0).numpy()
    except tf.errors.OpError as e:  # a worker stopped before the exchange
        raise UserError(
            f"{name}: lost contact with another worker during the start-up checks "
            f"({type(e).__name__}); its own error line says why"
        ) from None
    return {index: (message, digests) for index, message, digests in map(_decode, gathered)}


def agreed_error(reports):
    """The one error line for the workers' `{task name: (problem, digests)}` (in cluster
    order), or None. The same line on every worker: it depends on the reports alone."""
    names = list(reports)
    failed = [n for n in names if reports[n][0]]
    if failed:
        first = reports[failed[0]][0]
        if len(failed) == len(names) and all(reports[n][0] == first for n in failed):
            return first
        others = f"; {len(failed) - 1} other worker(s) failed too" if len(failed) > 1 else ""
        return f"{first} (on {failed[0]}{others})"
    what = {
        "settings": "the run's settings (flags, preset or --steps-per-epoch)",
        "shards": "the shards (the manifest.json of --data)",
        "checkpoints": "the checkpoints they see in the run folder (--out must be storage "
        "every worker reads)",
    }
    reference = names[0]
    for key in DIGESTS:
        differ = [n for n in names if reports[n][1][key] != reports[reference][1][key]]
        if differ:
            return (
                f"{', '.join(differ)} and {reference} differ in {what[key]}; every worker "
                "needs the same data and settings"
            )
    return None


def _task_names(strategy):
    """The cluster's tasks in order (the chief first, if any) and this task's index."""
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict()
    names = ["chief"] * len(cluster.get("chief", []))
    names += [f"worker {i}" for i in range(len(cluster.get("worker", [])))]
    if resolver.task_type == "chief":
        return names, 0
    return names, len(cluster.get("chief", [])) + int(resolver.task_id or 0)


def check_workers(config, data_dir, run_dir, strategy, steps_per_epoch=None, start_problem=None):
    """Every worker checks what it needs (enough train shards for each worker, intact
    shards, a writable run folder on the chief) and all exchange the results with one
    small collective, before any other: a problem on one worker becomes the same
    one-line UserError on every worker, instead of a worker that exits and peers that
    die in an aborted collective. Also refused: workers whose settings, shards or view
    of the run folder's checkpoints differ."""
    names, index = _task_names(strategy)
    problem = start_problem or worker_problem(
        config, data_dir, run_dir, is_chief(strategy), len(names)
    )
    digests = worker_digests(config, data_dir, run_dir, steps_per_epoch)
    reports = exchange(strategy, _encode(index, problem, digests), names[index])
    error = agreed_error({names[i]: report for i, report in sorted(reports.items())})
    if error:
        raise UserError(error)


def configure_cpu_replicas(count):
    """Splits the first CPU into `count` logical devices (before TF starts its devices)."""
    if count is None or count <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if existing and len(existing) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as e:
        raise UserError(
            f"cannot split the CPU into {count} devices: TensorFlow's devices already started ({e})"
        ) from None


def make_strategy(name="auto", cpu_replicas=1):
    """The tf.distribute strategy `name` (one of `config.STRATEGIES`); UserError messages
    start with the name (the command puts its flag in front)."""
    if name not in STRATEGIES:
        raise UserError(f"{name!r}: expected one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        config = os.environ.get("TF_CONFIG")
        if not config:
            raise UserError(
                "multiworker: TF_CONFIG is not set (see README, 'Training on several machines')"
            )
        try:
            cluster = json.loads(config)["cluster"]
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"multiworker: TF_CONFIG is not valid JSON with a 'cluster' key: {config[:80]!r}"
            ) from None
        if not isinstance(cluster, dict) or not cluster:
            raise UserError("multiworker: TF_CONFIG has an empty cluster")
        return tf.distribute.MultiWorkerMirroredStrategy()
    configure_cpu_replicas(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    if name == "default" or (name == "auto" and len(gpus) <= 1 and (cpu_replicas or 1) <= 1):
        return tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    if len(cpus) < 2:
        raise UserError(f"{name}: one device only; add GPUs or split the CPU (cpu_replicas=2)")
    # Cross-device ops on CPU: the default NCCL all-reduce needs GPUs.
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0])
    )
