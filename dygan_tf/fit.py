"""Trains DyGAN (or a paper baseline) into a run folder; `--demo` does everything.

    dygan-fit --demo | --data TFRECORD_DIR --out RUN_DIR | --brats-root DIR --out RUN_DIR

Every flag: `--help`, docs/how-to/train.md; a rerun after a kill resumes (`fit_lib.run_fit`).
"""

from dygan_tf.config.flags import add_config_flags, add_run_flags, config_from_flags
from dygan_tf.data.build_plan import add_split_flags, split_options
from dygan_tf.training import fit_lib
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.cli import ArgumentParser, command, keywords_of
from dygan_tf.utils.errors import for_flag

PROG = "dygan-fit"


def parse_args(argv):
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="folder of TFRecord shards with manifest.json")
    data.add_argument("--brats-root", help="BraTS folder; shards are built first")
    data.add_argument(
        "--demo",
        action="store_true",
        help="phantom -> shards -> train -> evaluate -> export, in one command",
    )
    p.add_argument("--data-out", help="where --brats-root shards go (default RUN_DIR/data)")
    add_split_flags(p)  # of the --brats-root cases
    p.add_argument("--out", help="run folder (default runs/demo with --demo)")
    p.add_argument(
        "--cache", default=cache_root(), help="where --demo keeps the phantom and its shards"
    )
    add_config_flags(p, default_preset="paper; demo with --demo")
    add_run_flags(p)
    args = p.parse_args(argv)
    args.split = split_options(args)
    return args


def resolve_config(args):
    """The preset with every given flag applied (`--demo`: the demo's recipe where the
    flags do not set it); one UserError line if invalid."""
    with for_flag(f"{PROG}:"):  # --baseline pix2pix3 builds its own one-target members
        config = config_from_flags(
            args, "demo" if args.demo else "paper", label_blind_ok=args.baseline is not None
        )
    recipe = {k: v for k, v in fit_lib.DEMO_RECIPE.items() if getattr(args, k) is None}
    return config.override(**recipe) if args.demo else config


def main(argv=None):
    args = parse_args(argv)
    fit_lib.run_fit(resolve_config(args), **keywords_of(fit_lib.run_fit, args))


cli = command(main)

if __name__ == "__main__":
    cli()
