"""BraTS volumes -> sharded TFRecords of normalised axial slices, plus manifest.json.

    dygan-build-tfrecords --brats-root DIR --out DIR2 [--image-size 256]
        [--train-hgg 220 --train-lgg 60 | --split-file F | --train-fraction 0.8]
        [--source-slices 75:86 [--per-volume 5] | --source-slices all] [--context K]
        [--workers N] [--shards-per-split N | --slices-per-shard N]
        [--compression gzip|none] [--skip-bad] [--seed 0]
    dygan-build-tfrecords --verify DIR   # every shard vs manifest.json

Worker processes load and preprocess cases (numpy/nibabel/scipy only); the parent
serialises the slices and writes the shards into a hidden staging folder, moves
them into place when every case has succeeded, and writes manifest.json last.
"""

from dygan_tf.config.flags import add_workers_flag, non_negative_int, positive_int
from dygan_tf.data import preprocessing
from dygan_tf.data.build_plan import (
    BuildOptions,
    add_split_flags,
    check_root_and_split,
    split_options,
)
from dygan_tf.data.shard_check import verify_or_raise
from dygan_tf.data.shards import build
from dygan_tf.utils.cli import ArgumentParser, command, keywords_of
from dygan_tf.utils.errors import UserError, for_flag


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.verify is not None:
        if args.brats_root or args.out:
            raise UserError(
                "dygan-build-tfrecords: --verify DIR checks shards; drop --brats-root/--out"
            )
        with for_flag("--verify"):  # pure Python: no TensorFlow start-up
            verify_or_raise(args.verify)
        print(f"{args.verify}: every shard matches its manifest")
        return
    _check_flags(args)
    with for_flag("--source-slices"):
        args.source_slices = preprocessing.parse_source_slices(args.source_slices)
    if args.source_slices == preprocessing.ALL_SLICES and args.per_volume is not None:
        raise UserError(
            "--per-volume: counts the slices kept of a --source-slices range; "
            "--source-slices all keeps every brain slice: drop --per-volume"
        )
    args.per_volume = args.per_volume or preprocessing.DEFAULT_SLICES_PER_VOLUME
    check_root_and_split(args.brats_root, args.split_file)
    build(args.brats_root, args.out, BuildOptions(**keywords_of(BuildOptions, args)))


def _parser():
    parser = ArgumentParser(prog="dygan-build-tfrecords", description=__doc__.splitlines()[0])
    parser.add_argument("--brats-root")
    parser.add_argument("--out")
    parser.add_argument(
        "--verify",
        metavar="DIR",
        help="check every shard of DIR (sha256, record count) against its manifest; "
        "names each bad one (exit 2)",
    )
    parser.add_argument("--image-size", type=positive_int, default=preprocessing.DEFAULT_IMAGE_SIZE)
    add_split_flags(parser)
    parser.add_argument(
        "--source-slices",
        default="75:86",
        help="half-open range of canonical axial indices to choose from (default 75:86, "
        "the paper's); 'all': every axial slice that holds brain (at least one voxel "
        "non-zero in any modality), and each training epoch then draws the same number of "
        "slices from every case",
    )
    parser.add_argument(
        "--per-volume",
        type=positive_int,
        help=f"slices kept per case: those of --source-slices with the most brain (default "
        f"{preprocessing.DEFAULT_SLICES_PER_VOLUME}); not with --source-slices all",
    )
    parser.add_argument(
        "--context",
        type=non_negative_int,
        default=0,
        help="store each kept slice with its K axial neighbours on each side (2K + 1 planes "
        "per modality, 0.0 beyond the volume's ends; record schema version 2) for "
        "dygan-fit --context K or less (default 0: the slice alone, schema version 1)",
    )
    add_workers_flag(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shards-per-split", type=positive_int)
    group.add_argument("--slices-per-shard", type=positive_int)
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable or inconsistent cases (listed in manifest)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
    return parser


def _check_flags(args):
    """One UserError line for a missing or out-of-range flag; fills the default split
    counts (before any file is read)."""
    missing = [f for f, v in (("--brats-root", args.brats_root), ("--out", args.out)) if not v]
    if missing:
        raise UserError(
            f"dygan-build-tfrecords: the following arguments are required: {', '.join(missing)}"
        )
    vars(args).update(split_options(args))


cli = command(main)


if __name__ == "__main__":
    cli()
