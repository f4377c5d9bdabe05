"""Builds the named phantom test sets: train, test_mni and test_colin27.

    dygan-build-benchmark --out DIR [--phantom v2] [--workers 2]
        [--template T1.nii.gz]

Writes DIR/phantom-<version>/{train,test_mni,test_colin27}/{volumes,shards-64px} and
DIR/phantom-<version>/benchmark.json (`dygan_tf.data.benchmark`). A set whose shards
are there already is kept, so a killed build resumes. Use the shards directly:
`python -m dygan_tf.fit --data DIR/phantom-v2/train/shards-64px --preset demo`, then
`python -m dygan_tf.evaluate --run RUN --data DIR/phantom-v2/test_colin27/shards-64px`
(its intensity LUT is fitted on train's shards, as their manifest says).
"""

from dygan_tf.config.flags import add_workers_flag
from dygan_tf.data.phantom import VERSIONS
from dygan_tf.utils.cli import ArgumentParser, command


def main(argv=None):
    parser = ArgumentParser(prog="dygan-build-benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument("--phantom", choices=VERSIONS, default="v2")
    add_workers_flag(parser)
    parser.add_argument("--template", help="brain-extracted T1 replacing Colin27's")
    args = parser.parse_args(argv)
    from dygan_tf.data.benchmark import build_benchmark, describe_set

    record = build_benchmark(args.out, args.phantom, args.template, args.workers)
    for name, entry in record["sets"].items():
        print(describe_set(args.phantom, name, entry, args.template))


cli = command(main)


if __name__ == "__main__":
    cli()
