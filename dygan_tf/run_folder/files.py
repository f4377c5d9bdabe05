"""The run folder: one place for its file names and for reading and writing them.

A run folder holds what `fit` leaves behind and what `evaluate`, `export`, `translate`
and the λ search read back:

    config.json       the resolved RunConfig (written at the start, checked on resume)
    run.json          the data folder, what its shards held (manifest sha256, each
                      split's cases), the held-out validation cases, backend, commit
    history.csv       one row per finished epoch (losses, validation PSNR/SSIM)
    checkpoints/last  the two newest epochs' checkpoints (a resume falls back to the older
                      one if the newest is unreadable); checkpoints/best: the best one
                      (`dygan_tf.run_folder.checkpoints` writes and reads them)
    logs/             TensorBoard
    generator.keras   the trained generator (written at the end)
    pix2pix3.json     only for `--baseline pix2pix3`: the three member run folders
    evaluation.json   where `evaluate --run` last scored it (its report, wherever `--out`
                      was; the shards, split, slices, TTA, scores and baselines)
    lock.json         while a process trains into it (`dygan_tf.run_folder.lock` owns that file)

Library errors name the folder or file and what was expected; commands add the flag.
Commands open a run folder once as a `dygan_tf.run_folder.folder.RunFolder`, whose
methods are the way in; the functions here are its helpers.
"""

import csv
import io
import json
import os

from dygan_tf.config.run_config import RunConfig
from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError

CONFIG = "config.json"
RUN_INFO = "run.json"
HISTORY = "history.csv"
GENERATOR = "generator.keras"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
BASELINE = "pix2pix3.json"
EVALUATION = "evaluation.json"
SHARDS_RECORD = "shards"  # run.json's record of the shards (`data_record`)
LAST, BEST = "last", "best"
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
    """run.json as a dict: {"data": absolute shard folder, "validation_cases": [...],
    "shards": {...} (since 0.2: `data_record`), ...}."""
    info = _read_json(path(run_dir, RUN_INFO), "the run's data record")
    if not isinstance(info, dict) or "validation_cases" not in info:
        raise UserError(f"{path(run_dir, RUN_INFO)}: expected an object with validation_cases")
    return info


def write_info(run_dir, shards, validation_cases, backend=None):
    """Writes run.json: the shard folder (a `ShardFolder`, or its path), the validation
    cases, what the shards held (`dygan_tf.run_folder.data_record`: manifest sha256 and
    each split's cases), the Keras backend the run began on and the code's git commit
    (None: not a checkout)."""
    from dygan_tf.data.shard_folder import open_shards
    from dygan_tf.utils.git import git_commit_of

    shards = open_shards(shards)
    info = {"data": os.path.abspath(shards.path), "validation_cases": list(validation_cases)}
    if backend:
        info["backend"] = backend  # the Keras backend the run began on
    info[SHARDS_RECORD] = shards.record()
    info["commit"], info["commit_dirty"] = git_commit_of()
    write_json_atomic(path(run_dir, RUN_INFO), info)
    return info


def add_to_info(run_dir, key, entry):
    """Appends `entry` to run.json's list `key` (e.g. each use of changed shards)."""
    info = read_info(run_dir)
    info.setdefault(key, []).append(entry)
    write_json_atomic(path(run_dir, RUN_INFO), info)


def data_dir_of(run_dir):
    """The shard folder a run trained on (from run.json), or None if not recorded."""
    if not os.path.isfile(path(run_dir, RUN_INFO)):
        return None
    return read_info(run_dir).get("data")


def write_evaluation(run_dir, record):
    """evaluation.json: the run's own record of its latest evaluation (the model card
    reads it)."""
    write_json_atomic(path(run_dir, EVALUATION), record)


def read_evaluation(run_dir):
    """evaluation.json as a dict, or None where the run was never evaluated."""
    if not os.path.isfile(path(run_dir, EVALUATION)):
        return None
    record = _read_json(path(run_dir, EVALUATION), "the run's evaluation record")
    if not isinstance(record, dict) or "per_target" not in record:
        raise UserError(f"{path(run_dir, EVALUATION)}: expected an object with per_target")
    return record


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


def prepare(run_dir, config, shards, choose_validation, backend=None):
    """Creates a run folder (config.json, run.json) or checks an existing one on resume.

    `choose_validation()` returns the validation case ids of a new run; run.json
    records them and the Keras `backend` it begins on. A folder that holds a run of
    another configuration is refused. Returns the validation case ids.
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
        info = write_info(run_dir, shards, choose_validation(), backend)
        validation = info["validation_cases"]
    write_config(run_dir, config)  # epochs may have grown
    return validation


def save_generator(generator, run_dir):
    """Writes generator.keras atomically (a failed write: one `WriteError` line, the
    previous file kept)."""
    with atomic_path(path(run_dir, GENERATOR)) as tmp:
        generator.save(tmp)


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


def write_baseline(run_dir, config, members, schedule="paper"):
    """pix2pix3.json: the DyGAN-equivalent config, {target: member folder name} and the
    members' schedule ("paper" or "compute-matched"; a file written before schedules
    existed has none: its members are compute-matched, the only kind there was)."""
    spec = {"kind": "pix2pix3", "members": dict(members), "config": config.to_dict()}
    write_json_atomic(path(run_dir, BASELINE), {**spec, "schedule": schedule})


def read_baseline(run_dir, with_schedule=False):
    """(config, {target: member run folder path}) of a pix2pix3 run, or None; with
    `with_schedule`, (config, members, schedule)."""
    file = path(run_dir, BASELINE)
    if not os.path.exists(file):
        return None
    spec = _read_json(file, "a pix2pix3 description")
    try:
        config = RunConfig.from_dict(spec["config"])
        members = {t: path(run_dir, folder) for t, folder in spec["members"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{file}: not a pix2pix3 description ({type(e).__name__}: {e})") from None
    schedule = spec.get("schedule", "compute-matched")  # (earlier releases: matched only)
    if schedule not in ("paper", "compute-matched"):
        raise UserError(f"{file}: unknown schedule {schedule!r}; expected paper or compute-matched")
    return (config, members, schedule) if with_schedule else (config, members)
