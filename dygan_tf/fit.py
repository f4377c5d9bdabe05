"""Trains DyGAN (or a paper baseline) into a run folder; `--demo` does everything.

    python -m dygan_tf.fit --demo
    python -m dygan_tf.fit --data TFRECORD_DIR --out RUN_DIR [--preset paper|demo|tiny]
    python -m dygan_tf.fit --brats-root DIR [--data-out DIR] --out RUN_DIR ...
      overrides: --epochs --image-size --base-filters --experts --lambda-l1 --lr
                 --source --targets flair,t1,t1ce --discriminator multiscale|patch
                 --dyconv none|down|up|both --label-mode kernel|input --seed
      baselines: --baseline pix2pix3 (three pix2pix models, one per target, same total
                 number of train steps); --dyconv none (pix2pix generator);
                 --label-mode input (MGAN-style); --discriminator patch
      testing:   --steps-per-epoch N caps each epoch at N steps

Running the same command again after a kill resumes at the first unfinished epoch.
"""

import math
import os
import time

from dygan_tf.atomic import write_json_atomic
from dygan_tf.cli import ArgumentParser, run_main
from dygan_tf.config import PRESETS, get_preset, pix2pix_member_config
from dygan_tf.errors import UserError

BASELINE_FILE = "pix2pix3.json"
DEMO_CASES = dict(hgg=21, lgg=6)  # phantom cases of the demo: 20 train + 7 test
DEMO_TRAIN = dict(train_hgg=16, train_lgg=4)
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "dygan_tf")


def parse_args(argv):
    p = ArgumentParser(prog="dygan_tf.fit", description=__doc__.splitlines()[0])
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", help="folder of TFRecord shards with manifest.json")
    data.add_argument("--brats-root", help="BraTS folder; shards are built first")
    p.add_argument("--data-out", help="where --brats-root shards go (default RUN_DIR/data)")
    p.add_argument("--train-hgg", type=int, default=220)
    p.add_argument("--train-lgg", type=int, default=60)
    p.add_argument(
        "--demo",
        action="store_true",
        help="phantom -> shards -> train -> evaluate -> export, in one command",
    )
    p.add_argument("--out", help="run folder (default runs/demo with --demo)")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--base-filters", type=int)
    p.add_argument("--experts", type=int)
    p.add_argument("--lambda-l1", type=float)
    p.add_argument("--lr", type=float)
    p.add_argument("--source")
    p.add_argument("--targets", help="comma-separated, e.g. flair,t1,t1ce")
    p.add_argument("--discriminator", choices=("multiscale", "patch"))
    p.add_argument("--dyconv", choices=("none", "down", "up", "both"))
    p.add_argument("--label-mode", choices=("kernel", "input"))
    p.add_argument("--seed", type=int)
    p.add_argument("--baseline", choices=("pix2pix3",))
    p.add_argument("--steps-per-epoch", type=int, help="cap steps per epoch (tests)")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "default", "mirrored", "multiworker"),
        help="auto: mirrored over all GPUs when there are several",
    )
    p.add_argument(
        "--cpu-replicas",
        type=int,
        default=1,
        help="split the CPU into N logical devices (multi-replica without GPUs)",
    )
    p.add_argument("--mixed-precision", choices=("none", "float16", "bfloat16"))
    p.add_argument(
        "--jit-compile", action="store_true", default=None, help="compile the train step with XLA"
    )
    p.add_argument(
        "--cache",
        default=os.environ.get("DYGAN_CACHE", DEFAULT_CACHE),
        help="where --demo keeps the phantom and its shards",
    )
    args = p.parse_args(argv)
    if args.demo and (args.data or args.brats_root):
        raise UserError("dygan_tf.fit: --demo builds its own data; drop --data/--brats-root")
    if not args.demo and not (args.data or args.brats_root):
        raise UserError("dygan_tf.fit: expected --data DIR, --brats-root DIR or --demo")
    if not args.demo and not args.out:
        raise UserError("dygan_tf.fit: expected --out RUN_DIR")
    if args.strategy == "multiworker" and (args.demo or args.baseline):
        raise UserError("--strategy multiworker: trains one DyGAN run; drop --demo/--baseline")
    for flag in (
        "epochs",
        "image_size",
        "base_filters",
        "experts",
        "steps_per_epoch",
        "cpu_replicas",
    ):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')}: expected >= 1, found {value}")
    return args


def resolve_config(args):
    """The preset with every given flag applied; one UserError line if invalid."""
    config = get_preset(args.preset or ("demo" if args.demo else "paper"))
    changes = dict(
        epochs=args.epochs,
        image_size=args.image_size,
        base_filters=args.base_filters,
        num_experts=args.experts,
        lambda_l1=args.lambda_l1,
        lr=args.lr,
        source=args.source,
        discriminator=args.discriminator,
        dyconv=args.dyconv,
        label_mode=args.label_mode,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
    )
    if args.base_filters is not None:
        changes["d_base_filters"] = args.base_filters
    if args.targets is not None:
        changes["targets"] = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    elif args.source is not None:
        from dygan_tf.tasks import targets_for

        changes["targets"] = targets_for(args.source)
    if args.label_mode == "input" and args.dyconv is None:
        changes["dyconv"] = "none"  # MGAN-style: static kernels, label at the input
    try:
        config = config.override(**changes)  # ModelConfig/TrainConfig validate themselves
    except ValueError as e:
        raise UserError(f"dygan_tf.fit: {e}") from None
    return config


def train_pix2pix3(config, data_dir, run_dir, steps_per_epoch=None, strategy=None):
    """Three pix2pix runs in run_dir/pix2pix_<target>; together as many train steps as
    one DyGAN run of `config` (each takes a third of them, with 3x the slices a step)."""
    from dygan_tf import training

    os.makedirs(run_dir, exist_ok=True)
    members = {t: f"pix2pix_{t}" for t in config.train.targets}
    write_json_atomic(
        os.path.join(run_dir, BASELINE_FILE),
        {"kind": "pix2pix3", "members": members, "config": config.to_dict()},
    )
    share = None
    if steps_per_epoch is not None:
        share = max(1, math.ceil(steps_per_epoch / len(members)))
    for target, folder in members.items():
        training.train(
            pix2pix_member_config(config, target),
            data_dir,
            os.path.join(run_dir, folder),
            steps_per_epoch=share,
            strategy=strategy,
        )


def ensure_shards(brats_root, out, image_size, train_hgg, train_lgg):
    """Builds shards once; a folder with a finished manifest of this size is reused."""
    from data_prep import build_tfrecords
    from dygan_tf.manifest import has_manifest, read_manifest

    if has_manifest(out):
        if read_manifest(out)["image_size"] == image_size:
            print(f"using the shards in {out}")
            return out
    build_tfrecords.build(
        brats_root, out, image_size=image_size, train_hgg=train_hgg, train_lgg=train_lgg
    )
    return out


def demo_data(cache, image_size):
    """The demo phantom and its shards under `cache`, built on first use."""
    from data_prep import make_phantom

    cases = DEMO_CASES["hgg"] + DEMO_CASES["lgg"]
    root = os.path.join(cache, f"phantom-{cases}")
    mapping = os.path.join(root, make_phantom.TRAINING_FOLDER, "name_mapping.csv")
    if not os.path.exists(mapping):  # written last: present = complete
        print(f"building a {cases}-case phantom in {root}")
        make_phantom.build_phantom(
            root, DEMO_CASES["hgg"], DEMO_CASES["lgg"], seed=0, workers=os.cpu_count() or 1
        )
    return ensure_shards(
        root, os.path.join(cache, f"shards-{cases}-{image_size}px"), image_size, **DEMO_TRAIN
    )


def run_demo(args, config):
    from dygan_tf import evaluate

    start = time.perf_counter()
    run_dir = args.out or os.path.join("runs", "demo")
    data_dir = demo_data(args.cache, config.model.image_size)
    from dygan_tf import training

    training.train(config, data_dir, run_dir, steps_per_epoch=args.steps_per_epoch)
    report_dir = os.path.join(run_dir, "eval")
    evaluate.main(["--run", run_dir, "--data", data_dir, "--split", "test", "--out", report_dir])
    export_dir = export_demo(run_dir)
    print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s\n"
        f"  data:        {data_dir}\n  run:         {run_dir} (history.csv, checkpoints/, "
        f"generator.keras)\n  tensorboard: tensorboard --logdir {run_dir}/logs\n"
        f"  evaluation:  {report_dir}/report.md, report.json, figure.png\n"
        f"  export:      {export_dir}"
    )


def export_demo(run_dir, name="dygan_demo"):
    """Exports the generator as saved_models/<name>/<next version>."""
    from dygan_tf import export

    parent = os.path.join("saved_models", name)
    versions = [int(v) for v in os.listdir(parent) if v.isdigit()] if os.path.isdir(parent) else []
    out = os.path.join(parent, str(max(versions, default=0) + 1))
    config, generator = export.load_run(run_dir)
    return export.export_generator(
        generator, out, export.build_metadata(config, run_dir, generator)
    )


def main(argv=None):
    from dygan_tf.cli import import_tensorflow_quietly

    args = parse_args(argv)
    config = resolve_config(args)  # pure Python: flag errors come before TensorFlow
    import_tensorflow_quietly()  # its C++ start-up lines would break one-line errors
    if args.data:
        from dygan_tf.manifest import read_manifest

        read_manifest(args.data)  # before any device start-up line reaches stderr
    from dygan_tf.distribute import make_strategy

    # Before any TensorFlow op: the multi-worker strategy and the CPU split both
    # configure devices, which is only possible before they start.
    strategy = make_strategy(args.strategy, args.cpu_replicas)
    if args.demo:
        return run_demo(args, config)
    if args.brats_root:
        data_dir = ensure_shards(
            args.brats_root,
            args.data_out or os.path.join(args.out, "data"),
            config.model.image_size,
            args.train_hgg,
            args.train_lgg,
        )
    else:
        data_dir = args.data
    from dygan_tf.manifest import read_manifest

    size = read_manifest(data_dir)["image_size"]
    if size != config.model.image_size:
        raise UserError(
            f"--data {data_dir}: shards are {size} px, the model expects "
            f"{config.model.image_size} px; pass --image-size {size} or rebuild"
        )
    from dygan_tf import training

    if args.baseline == "pix2pix3":
        train_pix2pix3(config, data_dir, args.out, args.steps_per_epoch, strategy)
    elif args.strategy == "multiworker":
        from dygan_tf.multiworker import train_multiworker

        train_multiworker(config, data_dir, args.out, strategy, args.steps_per_epoch)
    else:
        training.train(
            config, data_dir, args.out, steps_per_epoch=args.steps_per_epoch, strategy=strategy
        )
    print(f"done: {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
