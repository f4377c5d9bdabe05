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
from dygan_tf.data.build_plan import add_split_flags
from dygan_tf.data.shards import build_or_verify
from dygan_tf.utils.cli import ArgumentParser, command


def main(argv=None):
    build_or_verify(_parser().parse_args(argv))


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


cli = command(main)


if __name__ == "__main__":
    cli()
