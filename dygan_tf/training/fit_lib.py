"""What `python -m dygan_tf.fit` does, as library functions: train one run (on one
device, mirrored or across workers), the pix2pix3 baseline, and the one-command demo.

    run_fit(config, out, data=...)                     # the command's one call
    fit(config, shards, run, strategy)                 # a DyGAN (or pix2pix) run
    train_pix2pix3(config, shards, run)                # the paper's 3 x pix2pix
    run_demo(config, run, cache)                       # phantom -> ... -> export
"""

import contextlib
import math
import os
import time

from dygan_tf.config.run_config import PIX2PIX3_SCHEDULES, pix2pix_member_config
from dygan_tf.run_folder import files as run_files
from dygan_tf.run_folder.folder import open_run_folder
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.errors import UserError, for_flag

DEMO_CASES = dict(hgg=21, lgg=6)  # phantom cases of the demo: 20 train + 7 test
DEMO_TRAIN = dict(train_hgg=16, train_lgg=4)
DEFAULT_CACHE = cache_root()
DEMO_RUN = os.path.join("runs", "demo")
# The demo's recipe beyond the `demo` preset: a moving average of G's weights (momentum
# 0.99, ~100 steps). Without it seed 0 scored FLAIR 20.54 dB on the demo's test split at
# commit fac8aed, below the intensity LUT's 20.96; with it seeds 0, 1 and 2 beat both
# baselines on every target (FLAIR 21.28 / 23.90 / 22.53, docs/results/demo.md). The
# preset itself stays EMA-free: the paper's tables train it as the paper does.
DEMO_RECIPE = {"ema": 0.99}
DEMO_REPORT = "eval"  # the demo's test-split report: a folder inside its run folder


def run_fit(
    config,
    out=None,
    data=None,
    brats_root=None,
    data_out=None,
    split=None,
    demo=False,
    cache=DEFAULT_CACHE,
    baseline=None,
    steps_per_epoch=None,
    strategy="auto",
    cpu_replicas=1,
    backend=None,
    allow_changed_data=False,
):
    """`dygan-fit`: trains (or resumes) `config` into the run folder `out`, on the shards
    in `data`, on shards built from `brats_root` (into `data_out`, default `out`/data,
    split by `split`: `shards.build`'s split keywords) or, with `demo`, on the demo's
    (`run_demo`). Each argument is the `dygan-fit` flag of its name; a `UserError`
    names that flag.

    Bad paths, a bad manifest and a folder in use are refused before TensorFlow starts;
    the lock comes first (shards built from `brats_root` go into the run folder).
    """
    if not demo and not out:
        raise UserError("dygan-fit: expected --out RUN_DIR")
    if strategy == "multiworker" and (demo or baseline or brats_root):
        raise UserError(
            "--strategy multiworker: trains one DyGAN run from built shards; "
            "drop --demo/--baseline/--brats-root (build with dygan-build-tfrecords)"
        )
    if demo and (strategy not in ("auto", "default") or cpu_replicas != 1):
        raise UserError("--demo: trains on one device; drop --strategy/--cpu-replicas")
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.run_folder.folder import RunFolder
    from dygan_tf.training.backends import make_devices, select_backend
    from dygan_tf.utils.cli import import_tensorflow_quietly

    with for_flag("--backend"):
        backend = select_backend(backend)  # before Keras is imported
    shards = None  # each opened once here, handed down
    if data:
        with for_flag("--data"):
            shards = ShardFolder.open(data)
            if strategy != "multiworker":  # (its workers check, then agree)
                check_shards_match(shards, config)  # before TensorFlow starts
    multiworker = strategy == "multiworker"
    run = RunFolder(out or DEMO_RUN)
    with contextlib.ExitStack() as held:
        # Multi-worker runs lock once the strategy knows which worker is the chief.
        if not multiworker:
            held.enter_context(_writer_lock(run))
        import_tensorflow_quietly()  # its C++ start-up lines would break one-line errors
        from dygan_tf.training.distribute import make_strategy

        # Before any TensorFlow op: the multi-worker strategy and the CPU split both
        # configure devices, which is only possible before they start.
        with for_flag("--strategy"):
            if backend == "tensorflow":
                strategy = make_strategy(strategy, cpu_replicas)
            else:  # JAX's devices (DataParallel) or PyTorch's one device
                strategy = make_devices(backend, strategy, cpu_replicas)
        if demo:
            return run_demo(config, run, cache, steps_per_epoch)
        start_problem = None  # a multi-worker run's: every worker reports it
        if multiworker:
            try:
                held.enter_context(_writer_lock(run, strategy))
            except UserError as e:  # said by every worker after the start-up exchange
                start_problem = str(e)
        if brats_root:
            shards = _shards_from_brats(brats_root, data_out or run.file("data"), config, split)
        if not multiworker:  # a multi-worker run checks it on every worker, then agrees
            with for_flag("--data"):
                check_shards_match(shards, config)
        try:  # a resume: the shards must be those the run began on
            _check_resumed_data(run, shards, allow_changed_data, multiworker)
        except UserError as e:
            if not multiworker:
                raise
            start_problem = start_problem or str(e)
        fit(
            config,
            shards,
            run,
            strategy,
            steps_per_epoch,
            baseline=baseline,
            multiworker=multiworker,
            start_problem=start_problem,
        )
    print(f"done: {out}")


def _writer_lock(run, strategy=None):
    """One writer per run folder (`dygan_tf.run_folder.lock`): a second fit on a folder
    that a live process trains into is refused. Multi-worker runs (`strategy` given)
    share the folder by design and only the chief writes it, so only the chief holds
    the lock."""
    if strategy is not None:
        from dygan_tf.training.distribute import is_chief

        if not is_chief(strategy):
            return contextlib.nullcontext()
    with for_flag("--out"):
        return run.lock().acquire()


def _check_resumed_data(run, shards, allow, multiworker):
    """On a resume, UserError unless `shards` holds the shards the run began on
    (`--allow-changed-data`: one warning line, and run.json records the change)."""
    from dygan_tf.run_folder import data_record

    if not run.has(run_files.RUN_INFO):
        return  # a new run (or pix2pix3's folder, whose members record their data)
    try:
        checked = data_record.check(run, shards, allow=allow)
    except data_record.ChangedData as e:
        raise UserError(f"{e}; --allow-changed-data resumes on them anyway") from None
    if checked["changes"] and not multiworker:
        run.add_to_info("changed_data", checked)


def _shards_from_brats(brats_root, out, config, split):
    """The shards of `brats_root` in `out` (`ensure_shards`), opened; a case id of
    `split`'s split file missing from the root is named before any shard is built."""
    from dygan_tf.data.build_plan import check_root_and_split
    from dygan_tf.data.shard_folder import ShardFolder

    split = split or {}
    check_root_and_split(brats_root, split.get("split_file"))
    with for_flag("--brats-root"):
        return ShardFolder.open(
            ensure_shards(
                brats_root, out, config.model.image_size, context=config.model.context, **split
            )
        )


def check_shards_match(shards, config):
    """Refuses shards (a `ShardFolder`, or its path) whose slice size differs from the
    model's, or that hold fewer axial neighbours than it reads (`--context`)."""
    from dygan_tf.data.shard_folder import open_shards

    shards = open_shards(shards)
    shards.require_image_size(
        config.model.image_size,
        "the model",
        f"train at image size {shards.image_size} or rebuild the shards",
    )
    shards.require_context(
        config.model.context,
        "the model",
        f"train with at most --context {shards.context}, or rebuild them with "
        f"dygan-build-tfrecords --context {config.model.context}",
    )


def fit(
    config,
    shards,
    run,
    strategy=None,
    steps_per_epoch=None,
    baseline=None,
    multiworker=False,
    start_problem=None,
):
    """Trains (or resumes) one run of `config` on `shards` into `run`.

    Args:
        config: a `RunConfig`.
        shards: a `ShardFolder` (`dygan_tf.data.shard_folder`: the command opens it),
            or the path of a shard folder (`dygan-build-tfrecords`), opened once here.
        run: a `RunFolder` (`dygan_tf.run_folder.folder`: the command opens it), or the
            path of the run folder.
        strategy: a tf.distribute strategy (default: the current one).
        steps_per_epoch: cap on the steps of an epoch (default one pass).
        baseline: None (the configured model) or "pix2pix3".
        multiworker: drive `strategy` (a MultiWorkerMirroredStrategy) with the
            project's own loop instead of Keras `fit`.
        start_problem: with `multiworker`, this worker's error line from the command's
            own checks, which every worker then reports (multiworker.check_workers).
    """
    from dygan_tf.data.shard_folder import open_shards
    from dygan_tf.training import run as training_run

    shards, run = open_shards(shards), open_run_folder(run)
    if multiworker:
        # No worker stops before the exchange of start-up checks: its peers would wait.
        try:
            check_shards_match(shards, config)
        except UserError as e:
            start_problem = start_problem or str(e)
        from dygan_tf.training.distribute import train_multiworker

        return train_multiworker(config, shards, run, strategy, steps_per_epoch, start_problem)
    check_shards_match(shards, config)
    if baseline in PIX2PIX3_SCHEDULES:
        train_pix2pix3(config, shards, run, steps_per_epoch, strategy, PIX2PIX3_SCHEDULES[baseline])
    elif baseline is not None:
        raise ValueError(
            f"baseline must be None or one of {', '.join(PIX2PIX3_SCHEDULES)}. "
            f"Received: baseline={baseline!r}"
        )
    else:
        training_run.train(config, shards, run, steps_per_epoch=steps_per_epoch, strategy=strategy)


def train_pix2pix3(config, shards, run, steps_per_epoch=None, strategy=None, schedule="paper"):
    """Three pix2pix runs in `run`/pix2pix_<target> (`pix2pix_member_config`); `run` is a
    `RunFolder` (or its path).

    schedule "paper": each member is trained as one DyGAN run of `config` is (its batch,
    its steps per epoch, `steps_per_epoch` each). "compute-matched": together as many
    train steps as one DyGAN run (each a third of them, with 3x the slices a step)."""
    run = open_run_folder(run)
    os.makedirs(run.path, exist_ok=True)
    earlier = run.read_baseline(with_schedule=True)
    if earlier is not None and earlier[2] != schedule:
        flag = {v: k for k, v in PIX2PIX3_SCHEDULES.items()}[earlier[2]]
        raise UserError(
            f"{run}: a {earlier[2]} 3×pix2pix run (--baseline {flag}); resume it with "
            f"--baseline {flag}, or train this one into a new --out"
        )
    members = {t: f"pix2pix_{t}" for t in config.train.targets}
    run.write_baseline(config, members, schedule)
    share = steps_per_epoch
    if steps_per_epoch is not None and schedule == "compute-matched":
        share = max(1, math.ceil(steps_per_epoch / len(members)))
    from dygan_tf.data.shard_folder import open_shards
    from dygan_tf.training import run as training_run

    shards = open_shards(shards)
    for target, folder in members.items():
        training_run.train(
            pix2pix_member_config(config, target, schedule),
            shards,
            run.member(folder),
            steps_per_epoch=share,
            strategy=strategy,
        )


def ensure_shards(brats_root, out, image_size, context=0, **split):
    """Builds shards once; a folder with a finished manifest of this size and context
    is reused. `split`: `shards.build`'s split keywords (train_hgg, train_lgg,
    split_file, train_fraction)."""
    from dygan_tf.data import shards
    from dygan_tf.data.manifest import context_of, has_manifest, read_manifest

    if has_manifest(out):
        manifest = read_manifest(out)
        if manifest["image_size"] == image_size and context_of(manifest) == context:
            print(f"using the shards in {out}")
            return out
    shards.build(brats_root, out, image_size=image_size, context=context, **split)
    return out


def demo_data(cache, image_size):
    """The demo phantom and its shards under `cache`, built on first use."""
    from dygan_tf.data import phantom

    cases = DEMO_CASES["hgg"] + DEMO_CASES["lgg"]
    root = os.path.join(cache, f"phantom-{cases}")
    mapping = os.path.join(root, phantom.TRAINING_FOLDER, "name_mapping.csv")
    if not os.path.exists(mapping):  # written last: present = complete
        print(f"building a {cases}-case phantom in {root}")
        phantom.build_phantom(
            root, DEMO_CASES["hgg"], DEMO_CASES["lgg"], seed=0, workers=os.cpu_count() or 1
        )
    return ensure_shards(
        root, os.path.join(cache, f"shards-{cases}-{image_size}px"), image_size, **DEMO_TRAIN
    )


def run_demo(config, run=DEMO_RUN, cache=DEFAULT_CACHE, steps_per_epoch=None):
    """The one-command demo: the phantom and its shards (built once under `cache`),
    training `config` into `run` (a `RunFolder` or its path), the test-split report in
    `run`/eval and an
    export to saved_models/dygan_demo/<next version> (a rerun of a finished demo keeps
    the latest version, which serves the same weights). Returns the export folder."""
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.evaluation import report
    from dygan_tf.training import run as training_run

    start = time.perf_counter()
    run = open_run_folder(run)
    shards = ShardFolder.open(demo_data(cache, config.model.image_size))
    training_run.train(config, shards, run, steps_per_epoch=steps_per_epoch)
    report_dir = run.file(DEMO_REPORT)
    report.evaluate_report([run], report_dir, data_dir=shards, split="test")
    export_dir = export_demo(run)
    print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s\n"
        f"  data:        {shards}\n  run:         {run} ({run_files.HISTORY}, "
        f"{run_files.CHECKPOINTS}/, {run_files.GENERATOR})\n"
        f"  tensorboard: tensorboard --logdir {run.logs}\n"
        f"  evaluation:  {os.path.join(report_dir, report.REPORT_MD)}, {report.REPORT_JSON}, "
        f"{report.FIGURE}\n"
        f"  export:      {export_dir}"
    )
    return export_dir


def export_demo(run, name="dygan_demo", saved_models="saved_models"):
    """Exports the generator as saved_models/<name>/<next version>, unless the latest
    version already serves these weights (a rerun of a finished demo): then it says
    which version is current and writes nothing. Returns the version folder."""
    from dygan_tf.inference import savedmodel

    run = open_run_folder(run)
    parent = os.path.join(saved_models, name)
    config, generator = run.load()
    out, exported = savedmodel.export_new_version(
        generator, parent, savedmodel.build_metadata(config, run.path, generator), run_dir=run.path
    )
    if not exported:
        print(f"{out} already serves these weights: it stays the current version")
    return out
