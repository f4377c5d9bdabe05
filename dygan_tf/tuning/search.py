"""Searches the L1 weight λ of DyGAN with KerasTuner (the paper's Table 3).

The library behind `dygan-search-lambda` (`run_search`; its usage and flags are in
that command's module and in docs/reference/cli.md).
"""

import contextlib
import json
import math
import os
import sys

from dygan_tf.run_folder import files as run_files
from dygan_tf.utils.atomic import write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError, for_flag

PAPER_VALUES = "1,10,20,30,50,100,150,200,250,300"
SEARCH_FILE = "search.json"
PROG = "dygan-search-lambda"


def parse_values(text):
    """Sorted λ values from "1,10,100"; UserError on an empty list, a non-number, a
    value <= 0 or not finite, or a duplicate."""
    items = [s.strip() for s in text.split(",")]
    if not any(items):
        raise UserError(f"--values: expected comma-separated numbers > 0, found {text!r}")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"--values: {item!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"--values: λ must be a finite number > 0, found {item!r}")
        if value in values:
            raise UserError(f"--values: {item!r} is given twice")
        values.append(value)
    return sorted(values)


@contextlib.contextmanager
def atomic_tuner_writes():
    """KerasTuner writes trial.json, oracle.json and tuner0.json in place; a kill in the
    middle would leave a project it cannot reload. Route them through a rename."""
    from keras_tuner.src import utils as kt_utils

    original = kt_utils.save_json

    def save_json(path, obj):
        text = json.dumps(obj)
        write_text_atomic(path, text)
        return text  # as the original does

    kt_utils.save_json = save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


def prepare_search_dir(config, data_dir, out, settings):
    """Writes config.json and search.json for a new search, or checks them on a rerun.
    Returns the validation case ids."""
    from dygan_tf.training.run import choose_validation_cases

    os.makedirs(out, exist_ok=True)
    search_path = os.path.join(out, SEARCH_FILE)
    if os.path.exists(search_path):
        saved_config = run_files.read_config(out)  # the search folder keeps one too
        try:
            with open(search_path, encoding="utf-8") as f:
                saved = json.load(f)
            validation = saved.pop("validation_cases")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(
                f"{out}: unreadable search files ({type(e).__name__}: {e}); use a new folder"
            ) from None
        if saved != settings or saved_config != config:
            raise UserError(
                f"{out}: holds a search with other settings (see "
                f"{search_path}); use a new folder or the same flags"
            )
        return validation
    validation = choose_validation_cases(data_dir, config.train.seed)
    run_files.write_config(out, config)
    write_json_atomic(search_path, {**settings, "validation_cases": validation})
    return validation


def make_tuner(hypermodel, out, oracle, values, max_trials, seed):
    import keras_tuner as kt

    from dygan_tf.tuning.hypermodel import objective

    out = os.path.abspath(out)
    common = dict(
        objective=objective(),
        seed=seed,
        directory=os.path.dirname(out),
        project_name=os.path.basename(out),
        overwrite=False,
    )
    if oracle == "grid":
        return kt.GridSearch(hypermodel, max_trials=len(values), **common)
    return kt.BayesianOptimization(hypermodel, max_trials=max_trials, **common)


def search(
    config,
    data_dir,
    out,
    values,
    oracle="grid",
    max_trials=None,
    steps_per_epoch=None,
    verbose=None,
):
    """Runs (or resumes) the search on `data_dir` (a `ShardFolder`, or its path) into
    `out`; returns the results dict."""
    import keras

    from dygan_tf.data.shard_folder import open_shards
    from dygan_tf.tuning import results as tuning_results
    from dygan_tf.tuning.hypermodel import LambdaHyperModel

    data_dir = open_shards(data_dir)

    settings = {
        "data": os.path.abspath(data_dir),
        "values": list(values),
        "oracle": oracle,
        "max_trials": len(values) if oracle == "grid" else max_trials,
        "steps_per_epoch": steps_per_epoch,
    }
    validation = prepare_search_dir(config, data_dir, out, settings)
    hypermodel = LambdaHyperModel(config, data_dir, values, validation, steps_per_epoch)
    with atomic_tuner_writes():
        tuner = make_tuner(
            hypermodel, out, oracle, values, settings["max_trials"], config.train.seed
        )
        done = sum(str(t.status) == "COMPLETED" for t in tuner.oracle.trials.values())
        if done:
            print(f"resuming {out}: {done} of {settings['max_trials']} trials finished", flush=True)
        print(
            f"λ search over {', '.join(f'{v:g}' for v in values)} ({oracle}): "
            f"{hypermodel.steps_per_epoch} steps x {config.train.epochs} epoch(s) per "
            f"trial; validation cases {validation}",
            flush=True,
        )
        if verbose is None:
            verbose = 1 if sys.stdout.isatty() else 2
        tensorboard = keras.callbacks.TensorBoard(
            run_files.path(out, run_files.LOGS), write_graph=False
        )
        tuner.search(callbacks=[tensorboard], verbose=verbose)
    results = tuning_results.write_results(
        out,
        tuner.oracle,
        {
            "source": config.train.source,
            "targets": list(config.train.targets),
            "preset": config.preset,
            "epochs": config.train.epochs,
            "validation_cases": validation,
            **settings,
        },
    )
    return results


def run_search(
    config, data, out, values, oracle="grid", max_trials=None, steps_per_epoch=None, backend=None
):
    """`dygan-search-lambda`: the search of `config` on the shards in `data` into `out`
    on the Keras `backend`, then its results table and where its files went; returns the
    results dict. Each argument is the flag of its name; a `UserError` names that flag.

    Bad shards and a folder in use are refused before TensorFlow starts."""
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.run_folder import lock
    from dygan_tf.training.backends import select_backend
    from dygan_tf.training.fit_lib import check_shards_match
    from dygan_tf.utils.cli import import_tensorflow_quietly

    if not os.path.isdir(data):
        raise UserError(f"--data {data}: not a folder")
    with for_flag("--backend"):
        select_backend(backend)  # before Keras is imported
    with for_flag("--data"):
        shards = ShardFolder.open(data)  # read once, handed down
        check_shards_match(shards, config)
    with for_flag("--out"):
        held = lock.hold(out).acquire()  # one search (or fit) per folder at a time
    with held:  # errors below name their paths (the search folder, the shards)
        import_tensorflow_quietly()  # its C++ start-up lines would break one-line errors
        results = search(config, shards, out, values, oracle, max_trials, steps_per_epoch)
    from dygan_tf.tuning import results as tuning_results

    with open(os.path.join(out, tuning_results.RESULTS_MD), encoding="utf-8") as f:
        print("\n" + f.read())
    failed = [t for t in results["trials"] if t["per_target"] is None]
    if failed:
        print(
            f"{len(failed)} trial(s) did not finish: "
            + ", ".join(f"λ={t['lambda']:g} ({t['status']})" for t in failed),
            flush=True,
        )
    print(
        f"wrote {out}/results.json, results.md, {tuning_results.PLOT}; "
        f"tensorboard --logdir {run_files.path(out, run_files.LOGS)}"
    )
    return results
