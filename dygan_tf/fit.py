"""Trains DyGAN (or a paper baseline) into a run folder; `--demo` does everything.

    dygan-fit --demo
    dygan-fit --data TFRECORD_DIR --out RUN_DIR [--preset paper|demo|tiny]
    dygan-fit --brats-root DIR [--data-out DIR] --out RUN_DIR ...
      overrides: --epochs --image-size --base-filters --experts --lambda-l1 --lr
                 --lr-decay --ema --source t2|...|any --targets flair,t1,t1ce
                 --inputs single|multi --target-weights flair=2 (multi)
                 --discriminator multiscale|patch --d-dyconv on|off
                 --dyconv none|down|up|both --label-mode kernel|input --seed
      baselines: --baseline pix2pix3 (the paper's: three pix2pix models, one per target,
                 each trained as one DyGAN run is); --baseline pix2pix3-matched (the
                 three together take one DyGAN run's steps); --dyconv none --targets t1
                 (one pix2pix); --label-mode input (MGAN-style); --discriminator patch
                 --d-dyconv off (a static PatchGAN); the paper's rows: `python -m
                 research.paper_tables` from a checkout
      backend:   --backend jax|torch trains on that Keras backend (TensorFlow stays the
                 data library); the run folder is the same, checkpoints included
      testing:   --steps-per-epoch N caps each epoch at N steps

Running the same command again after a kill resumes at the first unfinished epoch.
"""

import contextlib

from dygan_tf.config.flags import add_config_flags, config_from_flags
from dygan_tf.config.run_config import BASELINES, STRATEGIES
from dygan_tf.data.build_plan import add_split_flags, split_options
from dygan_tf.training.fit_lib import DEMO_RUN
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.cli import (
    ArgumentParser,
    add_backend_flag,
    add_steps_per_epoch_flag,
    check_positive,
    run_main,
)
from dygan_tf.utils.errors import UserError, for_flag

PROG = "dygan-fit"


def parse_args(argv):
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="folder of TFRecord shards with manifest.json")
    data.add_argument("--brats-root", help="BraTS folder; shards are built first")
    p.add_argument("--data-out", help="where --brats-root shards go (default RUN_DIR/data)")
    add_split_flags(p)  # of the --brats-root cases
    p.add_argument(
        "--demo",
        action="store_true",
        help="phantom -> shards -> train -> evaluate -> export, in one command",
    )
    p.add_argument("--out", help="run folder (default runs/demo with --demo)")
    add_config_flags(p, default_preset="paper; demo with --demo")
    p.add_argument(
        "--baseline",
        choices=BASELINES,
        help="pix2pix3: the paper's 3×pix2pix, each member trained as one DyGAN run "
        "(its batch and steps per epoch); pix2pix3-matched: the three together take one "
        "DyGAN run's steps (compute-matched)",
    )
    add_steps_per_epoch_flag(p)
    p.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="resume although the shards differ from those the run began on (run.json "
        "records their manifest's sha256; refused otherwise)",
    )
    p.add_argument(
        "--strategy",
        default="auto",
        choices=STRATEGIES,
        help="auto: mirrored over all GPUs when there are several",
    )
    p.add_argument(
        "--cpu-replicas",
        type=int,
        default=1,
        help="split the CPU into N logical devices (multi-replica without GPUs)",
    )
    add_backend_flag(p)
    p.add_argument(
        "--cache",
        default=cache_root(),
        help="where --demo keeps the phantom and its shards",
    )
    args = p.parse_args(argv)
    if args.demo and (args.data or args.brats_root):
        raise UserError(f"{PROG}: --demo builds its own data; drop --data/--brats-root")
    if not args.demo and not (args.data or args.brats_root):
        raise UserError(f"{PROG}: expected --data DIR, --brats-root DIR or --demo")
    if not args.demo and not args.out:
        raise UserError(f"{PROG}: expected --out RUN_DIR")
    if args.strategy == "multiworker" and (args.demo or args.baseline or args.brats_root):
        raise UserError(
            "--strategy multiworker: trains one DyGAN run from built shards; "
            "drop --demo/--baseline/--brats-root (build with dygan-build-tfrecords)"
        )
    if args.demo and (args.strategy not in ("auto", "default") or args.cpu_replicas != 1):
        raise UserError("--demo: trains on one device; drop --strategy/--cpu-replicas")
    check_positive(args, ("--steps-per-epoch", "--cpu-replicas"))
    args.split = split_options(args)
    return args


def resolve_config(args):
    """The preset with every given flag applied; one UserError line if invalid."""
    with for_flag(f"{PROG}:"):
        # --baseline pix2pix3 builds its own (one-target) members from the config.
        config = config_from_flags(
            args, "demo" if args.demo else "paper", label_blind_ok=args.baseline is not None
        )
    if args.demo:  # the demo's recipe, where the flags do not set it
        from dygan_tf.training.fit_lib import DEMO_RECIPE

        config = config.override(
            **{k: v for k, v in DEMO_RECIPE.items() if getattr(args, k, None) is None}
        )
    return config


def _writer_lock(run, strategy=None):
    """One writer per run folder (`dygan_tf.run_folder.lock`): a second fit on a folder that a live
    process trains into is refused. Multi-worker runs (`strategy` given) share the folder
    by design and only the chief writes it, so only the chief holds the lock."""
    if strategy is not None:
        from dygan_tf.training.multiworker import is_chief

        if not is_chief(strategy):
            return contextlib.nullcontext()
    with for_flag("--out"):
        return run.lock().acquire()


def _check_resumed_data(run, shards, allow, multiworker):
    """On a resume, UserError unless `shards` holds the shards the run began on
    (`--allow-changed-data`: one warning line, and run.json records the change)."""
    from dygan_tf.run_folder import data_record
    from dygan_tf.run_folder import files as run_folder

    if not run.has(run_folder.RUN_INFO):
        return  # a new run (or pix2pix3's folder, whose members record their data)
    try:
        checked = data_record.check(run, shards, allow=allow)
    except data_record.ChangedData as e:
        raise UserError(f"{e}; --allow-changed-data resumes on them anyway") from None
    if checked["changes"] and not multiworker:
        run.add_to_info("changed_data", checked)


def main(argv=None):
    from dygan_tf.data.shard_folder import ShardFolder
    from dygan_tf.run_folder.folder import RunFolder
    from dygan_tf.utils.cli import import_tensorflow_quietly

    args = parse_args(argv)
    from dygan_tf.training.backends import make_devices, select_backend

    with for_flag("--backend"):
        backend = select_backend(args.backend)  # before Keras is imported
    config = resolve_config(args)  # pure Python: flag errors come before TensorFlow
    shards = None  # opened once here, handed down
    if args.data:
        with for_flag("--data"):
            shards = ShardFolder.open(args.data)  # a bad --data too
    multiworker = args.strategy == "multiworker"
    run = RunFolder(args.out or DEMO_RUN)  # opened once here, handed down
    with contextlib.ExitStack() as held:
        # The lock comes first (shards built from --brats-root go into the run folder);
        # a folder in use is refused before TensorFlow starts. Multi-worker runs lock
        # once the strategy knows which worker is the chief.
        if not multiworker:
            held.enter_context(_writer_lock(run))
        import_tensorflow_quietly()  # its C++ start-up lines would break one-line errors
        from dygan_tf.training import fit_lib
        from dygan_tf.training.distribute import make_strategy

        # Before any TensorFlow op: the multi-worker strategy and the CPU split both
        # configure devices, which is only possible before they start.
        with for_flag("--strategy"):
            if backend == "tensorflow":
                strategy = make_strategy(args.strategy, args.cpu_replicas)
            else:  # JAX's devices (DataParallel) or PyTorch's one device
                strategy = make_devices(backend, args.strategy, args.cpu_replicas)
        if args.demo:
            fit_lib.run_demo(config, run, args.cache, args.steps_per_epoch)
            return
        start_problem = None
        if multiworker:
            try:
                held.enter_context(_writer_lock(run, strategy))
            except UserError as e:  # said by every worker after the start-up exchange
                start_problem = str(e)
        if args.brats_root:
            if args.split_file:  # a missing case id is named before any shard is built
                from dygan_tf.data.cases import discover_cases, read_split_file

                with for_flag("--brats-root"):
                    cases = discover_cases(args.brats_root)
                with for_flag("--split-file"):
                    read_split_file(args.split_file, cases)
            with for_flag("--brats-root"):
                shards = ShardFolder.open(
                    fit_lib.ensure_shards(
                        args.brats_root,
                        args.data_out or run.file("data"),
                        config.model.image_size,
                        **args.split,
                    )
                )
        if not multiworker:  # a multi-worker run checks it on every worker, then agrees
            with for_flag("--data"):
                fit_lib.check_image_size(shards, config)
        try:  # a resume: the shards must be those the run began on
            _check_resumed_data(run, shards, args.allow_changed_data, multiworker)
        except UserError as e:
            if not multiworker:
                raise
            start_problem = start_problem or str(e)  # every worker reports it
        fit_lib.fit(
            config,
            shards,
            run,
            strategy,
            args.steps_per_epoch,
            baseline=args.baseline,
            multiworker=multiworker,
            start_problem=start_problem,
        )
    print(f"done: {args.out}")


def cli():
    """The installed `dygan-fit` command (pyproject.toml's [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
