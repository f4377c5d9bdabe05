"""The run folder: one place for its file names and for reading and writing them.

A run folder holds what `fit` leaves behind and what `evaluate`, `export`, `translate`
and the λ search read back:

    config.json       the resolved RunConfig (written at the start, checked on resume)
    run.json          the data folder and the held-out validation cases
    history.csv       one row per finished epoch (losses, validation PSNR/SSIM)
    checkpoints/last  the two newest epochs' checkpoints (a resume falls back to the older
                      one if the newest is unreadable); checkpoints/best: the best one
    logs/             TensorBoard
    generator.keras   the trained generator (written at the end)
    pix2pix3.json     only for `--baseline pix2pix3`: the three member run folders
    lock.json         while a process trains into it (`dygan_tf.lock` owns that file)

Library errors name the folder or file and what was expected; commands add the flag.
"""

import csv
import io
import json
import os
import re
import shutil
import sys

from dygan_tf.config.run_config import RunConfig
from dygan_tf.run_folder import npz_checkpoint
from dygan_tf.utils.atomic import atomic_path, write_error, write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError

CONFIG = "config.json"
RUN_INFO = "run.json"
HISTORY = "history.csv"
GENERATOR = "generator.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
BASELINE = "pix2pix3.json"
LAST, BEST = "last", "best"
CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's default: ckpt-<epoch>.index, .data-*
CHECKPOINT_INDEX = "checkpoint"  # the manager's list of its checkpoints, newest last
KEEP_LAST = 2  # the newest checkpoint in checkpoints/last and one to fall back on
GENERATOR_INPUTS = ("image", "task")


def path(run_dir, name):
    """The path of one of the run folder's files or folders (a name above)."""
    return os.path.join(os.fspath(run_dir), name)


def checkpoint_dir(run_dir, kind=LAST):
    """checkpoints/last (the newest epoch) or checkpoints/best (best validation PSNR)."""
    if kind not in (LAST, BEST):
        raise ValueError(f"kind must be {LAST!r} or {BEST!r}. Received: kind={kind!r}")
    return os.path.join(os.fspath(run_dir), CHECKPOINTS, kind)


def _read_json(file, what):
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{file}: not found; expected {what}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{file}: unreadable {what} ({type(e).__name__}: {e})") from None


def read_config(run_dir):
    """The RunConfig saved in `run_dir`/config.json."""
    file = path(run_dir, CONFIG)
    data = _read_json(file, "a run config")
    try:
        return RunConfig.from_dict(data)
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{file}: not a run config ({type(e).__name__}: {e})") from None


def write_config(run_dir, config):
    write_json_atomic(path(run_dir, CONFIG), config.to_dict())


def read_info(run_dir):
    """run.json as a dict: {"data": absolute shard folder, "validation_cases": [...]}."""
    info = _read_json(path(run_dir, RUN_INFO), "the run's data record")
    if not isinstance(info, dict) or "validation_cases" not in info:
        raise UserError(f"{path(run_dir, RUN_INFO)}: expected an object with validation_cases")
    return info


def write_info(run_dir, data_dir, validation_cases):
    info = {"data": os.path.abspath(data_dir), "validation_cases": list(validation_cases)}
    write_json_atomic(path(run_dir, RUN_INFO), info)
    return info


def data_dir_of(run_dir):
    """The shard folder a run trained on (from run.json), or None if not recorded."""
    if not os.path.isfile(path(run_dir, RUN_INFO)):
        return None
    return read_info(run_dir).get("data")


def read_history(run_dir):
    """history.csv as a list of dicts (strings), [] before the first finished epoch."""
    file = path(run_dir, HISTORY)
    if not os.path.exists(file):
        return []
    with open(file, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_history(run_dir, rows):
    """Rewrites history.csv atomically; columns in first-seen order."""
    if not rows:
        return
    fields = list(rows[0])
    for row in rows:
        fields += [k for k in row if k not in fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path(run_dir, HISTORY), out.getvalue())


def same_run(saved, config):
    """Whether two RunConfigs describe the same run up to the number of epochs."""
    a, b = saved.to_dict(), config.to_dict()
    a["train"].pop("epochs"), b["train"].pop("epochs")
    return a == b


def prepare(run_dir, config, data_dir, choose_validation):
    """Creates a run folder (config.json, run.json) or checks an existing one on resume.

    `choose_validation()` returns the validation case ids of a new run. A folder that
    holds a run of another configuration is refused. Returns the validation case ids.
    """
    os.makedirs(run_dir, exist_ok=True)
    if os.path.exists(path(run_dir, CONFIG)) and os.path.exists(path(run_dir, RUN_INFO)):
        saved, info = read_config(run_dir), read_info(run_dir)
        if not same_run(saved, config):
            raise UserError(
                f"{run_dir}: holds a run with another configuration (see "
                f"{path(run_dir, CONFIG)}); use a new run folder or the same settings"
            )
        validation = info["validation_cases"]
    else:
        validation = write_info(run_dir, data_dir, choose_validation())["validation_cases"]
    write_config(run_dir, config)  # epochs may have grown
    return validation


def save_generator(generator, run_dir):
    """Writes generator.keras atomically (a failed write: one `WriteError` line, the
    previous file kept)."""
    with atomic_path(path(run_dir, GENERATOR)) as tmp:
        generator.save(tmp)


def save_checkpoint(manager, number):
    """`manager.save(checkpoint_number=number)`; a failed write (full disk) becomes one
    `WriteError` line naming the checkpoint. TensorFlow writes the tensors under a
    temporary name and updates the `checkpoint` index file only after them, so the
    manager's previous checkpoints stay the restorable ones."""
    import tensorflow as tf

    prefix = os.path.join(manager.directory, f"{CHECKPOINT_NAME}-{number}")
    # A resume that redoes epoch N may save over a good ckpt-N (in best/): on failure
    # only what this save created goes, never a checkpoint that was there before.
    before = set(os.listdir(manager.directory)) if os.path.isdir(manager.directory) else set()
    try:
        return manager.save(checkpoint_number=number)
    except (tf.errors.OpError, OSError) as e:
        leftovers = [prefix + "_temp"]
        if os.path.isdir(manager.directory):
            leftovers += [
                os.path.join(manager.directory, n)
                for n in os.listdir(manager.directory)
                if n not in before
                and (
                    n == os.path.basename(prefix) + ".index"
                    or n.startswith(os.path.basename(prefix) + ".data-")
                )
            ]
        for leftover in leftovers:  # no half-written checkpoint for a resume to try
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            elif os.path.exists(leftover):
                os.remove(leftover)
        raise write_error(
            prefix,
            e,
            f"{manager.directory} keeps its previous checkpoint; free some space and run "
            "the same command again to resume",
        ) from None


def checkpoints_in(directory):
    """{epoch number: checkpoint prefix} of the checkpoint files in `directory`, read
    from the file names (the `checkpoint` index file may be the broken part)."""
    found = npz_checkpoint.checkpoints_in(directory)  # a run trained on JAX or PyTorch
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            m = re.fullmatch(rf"{CHECKPOINT_NAME}-(\d+)\.(index|data-\d+-of-\d+)", name)
            if m:
                found[int(m.group(1))] = os.path.join(directory, f"{CHECKPOINT_NAME}-{m.group(1)}")
    return found


def uses_npz_checkpoints(run_dir):
    """Whether `run_dir` holds backend-neutral `.npz` checkpoints (a JAX or PyTorch run)."""
    return any(
        npz_checkpoint.checkpoints_in(checkpoint_dir(run_dir, kind)) for kind in (LAST, BEST)
    )


def checkpoint_problem(prefix):
    """Why the checkpoint at `prefix` cannot be restored, or None. Every tensor is read,
    so a checksum mismatch or a truncation is found before anything is restored."""
    if os.path.exists(prefix + npz_checkpoint.SUFFIX):
        return npz_checkpoint.problem(prefix)
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError) as e:
        text = (getattr(e, "message", None) or str(e)).strip()
        text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
        text = text.replace(prefix, os.path.basename(prefix))
        return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__
    return None


def _repair_index(directory, kept):
    """Makes the `checkpoint` index file name the last of `kept` (prefixes, oldest
    first) as the newest, unless it already does: the manager starts from this list."""
    file = os.path.join(directory, CHECKPOINT_INDEX)
    names = [os.path.basename(p) for p in kept]
    try:
        with open(file, encoding="utf-8") as f:
            if f'model_checkpoint_path: "{names[-1]}"' in f.read().splitlines():
                return
    except (OSError, UnicodeDecodeError):
        pass
    write_text_atomic(  # a text proto, relative names, as TensorFlow writes it
        file,
        f'model_checkpoint_path: "{names[-1]}"\n'
        + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names),
    )


def restore_last(checkpoint, run_dir, history, repair=True):
    """Restores the newest readable checkpoint of `run_dir`/checkpoints/last into
    `checkpoint`; returns its prefix, or None for a fresh start.

    A newer unreadable checkpoint is passed over with one `note:` line on stderr (the
    caller drops the history rows past the restored epoch). With nothing restorable a
    run starts over (with a note) only if history.csv records at most epoch 1 (a kill
    before its first checkpoint was complete) or nothing at all with no checkpoint
    files either; otherwise one UserError names the folder: a run never silently
    restarts on top of its history. `repair` rewrites the `checkpoint` index
    file to name the restored checkpoint (the run's writer only).
    """
    directory = checkpoint_dir(run_dir)
    found = checkpoints_in(directory)
    bad = []
    for number in sorted(found, reverse=True):
        problem = checkpoint_problem(found[number])
        if problem is None:
            checkpoint.restore(found[number]).assert_existing_objects_matched()
            if bad:
                print(
                    f"note: {directory}: passing over unreadable "
                    + "; ".join(f"{os.path.basename(p)} ({why})" for p, why in bad)
                    + f"; resuming from {os.path.basename(found[number])}",
                    file=sys.stderr,
                    flush=True,
                )
            if repair and not os.path.exists(found[number] + npz_checkpoint.SUFFIX):
                _repair_index(directory, [found[n] for n in sorted(found) if n <= number])
            return found[number]
        bad.append((found[number], problem))
    finished = max((int(r["epoch"]) for r in history), default=0)
    if finished > 1 or (bad and finished == 0):
        why = "; ".join(f"{os.path.basename(p)}: {w}" for p, w in bad) or "none found"
        recorded = (
            f"{path(run_dir, HISTORY)} records {finished} finished epoch(s)"
            if finished
            else "its checkpoint files are all unreadable"
        )
        raise UserError(
            f"{directory}: no restorable checkpoint ({why}), but {recorded}; restore the "
            "checkpoint files, or train into a new run folder"
        )
    if bad or finished:
        print(
            f"note: {run_dir}: epoch 1 has no restorable checkpoint; starting over",
            file=sys.stderr,
            flush=True,
        )
    return None


def load_generator(file):
    """A generator from a `.keras` file, in Keras safe mode (no code in the file runs)."""
    import keras

    import dygan_tf  # noqa: F401 (registers the package's Keras objects)

    try:
        generator = keras.saving.load_model(file, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{file}: cannot load the generator ({first})") from None
    inputs = generator.input
    if not isinstance(inputs, dict) or set(inputs) != set(GENERATOR_INPUTS):
        raise UserError(f"{file}: expected a generator with inputs {GENERATOR_INPUTS}")
    return generator


def require_folder(run_dir):
    """UserError unless `run_dir` is a folder (pure Python: commands check their run
    folders before TensorFlow starts)."""
    if not os.path.isdir(run_dir):
        raise UserError(f"{run_dir}: not a folder; expected a training run folder")


def load_run(run_dir):
    """(RunConfig, generator) of a finished training run folder.

    Args:
        run_dir: a folder written by `python -m dygan_tf.fit` (config.json and
            generator.keras).

    Returns:
        `(config, generator)`: the run's `RunConfig` and its generator, a Keras model
        taking `{"image": (B, H, W, 1), "task": (B, 12)}`.

    Example:

    >>> config, generator = load_run("runs/demo")  # doctest: +SKIP
    >>> fake = generator({"image": t2_slices, "task": codes})  # doctest: +SKIP
    """
    require_folder(run_dir)
    for name in (CONFIG, GENERATOR):
        if not os.path.isfile(path(run_dir, name)):
            raise UserError(
                f"{run_dir}: no {name}; expected a training run folder holding "
                f"{CONFIG} and {GENERATOR}"
            )
    return read_config(run_dir), load_generator(path(run_dir, GENERATOR))


def write_baseline(run_dir, config, members):
    """pix2pix3.json: the DyGAN-equivalent config and {target: member folder name}."""
    write_json_atomic(
        path(run_dir, BASELINE),
        {"kind": "pix2pix3", "members": dict(members), "config": config.to_dict()},
    )


def read_baseline(run_dir):
    """(config, {target: member run folder path}) of a pix2pix3 run, or None."""
    file = path(run_dir, BASELINE)
    if not os.path.exists(file):
        return None
    spec = _read_json(file, "a pix2pix3 description")
    try:
        config = RunConfig.from_dict(spec["config"])
        members = {t: path(run_dir, folder) for t, folder in spec["members"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{file}: not a pix2pix3 description ({type(e).__name__}: {e})") from None
    return config, members
