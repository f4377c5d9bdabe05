"""Evaluates trained generators on a split: report.json, report.md (Table 2) and figure.png.

Usage, the baselines scored beside every model and every flag: docs/reference/cli.md."""

from dygan_tf.inference.tta import TTA_MODES
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError

PROG = "dygan-evaluate"
# The flag of each of `evaluate_report`'s parameters, for its errors.
FLAGS = dict(model="--model", data="--data", baseline_from="--baseline-from")
FLAGS |= dict(allow_changed_data="--allow-changed-data")
HELP = {
    "--tta": "test-time augmentation of the models' outputs (flip: left-right mean)",
    "--baseline-from": "shard folder whose training split fits the intensity LUT",
    "--allow-changed-data": "score a run on shards other than those it trained on (refused "
    "otherwise; the report records it)",
}


def main(argv=None):
    p = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--run", help="training run folder")
    which.add_argument("--model", help="exported SavedModel folder")
    p.add_argument("--data", help="TFRecord folder (default: the run's training data)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN")
    p.add_argument("--figure-cases", type=int, default=4)
    p.add_argument("--tta", choices=TTA_MODES, default="none", help=HELP["--tta"])
    p.add_argument("--baseline-from", metavar="SHARDS", help=HELP["--baseline-from"])
    p.add_argument("--allow-changed-data", action="store_true", help=HELP["--allow-changed-data"])
    args = p.parse_args(argv)
    runs = ([args.run] if args.run else []) + list(args.compare)
    if not runs and not args.model:
        raise UserError(f"{PROG}: expected --run RUN_DIR, --model DIR or --compare")
    if args.model and not args.data:
        raise UserError(f"{PROG}: --model needs --data TFRECORD_DIR")
    if args.figure_cases < 1:
        raise UserError(f"--figure-cases: expected >= 1, found {args.figure_cases}")
    from dygan_tf.evaluation.report import evaluate_report

    run_flags = (["--run"] if args.run else []) + ["--compare"] * len(args.compare)
    evaluate_report(runs, args.out, args.data, args.split, args.model, args.figure_cases,
        run_flags, args.tta, args.baseline_from, args.allow_changed_data, FLAGS)  # fmt: skip


def cli():
    """The installed `dygan-evaluate` command (pyproject.toml's [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
