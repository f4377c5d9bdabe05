"""Translates whole MR volumes into the missing modalities with a trained DyGAN.

Usage, what it writes, refuses and prints, and every flag: docs/reference/cli.md."""

from dygan_tf.inference.batch_choice import CANDIDATES
from dygan_tf.inference.batch_translation import translate_input
from dygan_tf.inference.translation import OUTPUT_NAMINGS
from dygan_tf.inference.tta import TTA_MODES
from dygan_tf.utils.cli import ArgumentParser, run_main

# The flag of each of `translate_input`'s parameters, for its errors.
FLAGS = dict(model="--model", input_path="--input", out_dir="--out-dir", source="--source")
FLAGS |= dict(targets="--targets", batch_slices="--batch:")
FLAGS |= dict(allow_changed_data="--allow-changed-data")
HELP = {
    "--model": "SavedModel folder (or TF Serving base path) or training run folder",
    "--input": "a NIfTI volume or a BraTS case folder",
    "--source": "modality of --input: flair, t1, t1ce, t2 or t2f, t1n, t1c, t2w, any case "
    "(default for a file: from its name; for a folder: t2, t1, flair, t1ce, first present)",
    "--targets": "comma-separated target modalities (default: the other three; in a folder: "
    "the missing ones)",
    "--batch": "axial slices per model call (each expands into one row per target), or auto: "
    f"the fastest of {', '.join(map(str, CANDIDATES))}, timed on the first case (one line "
    "says which)",
    "--overwrite": "replace existing outputs (never an input file)",
    "--tta": "test-time augmentation (flip: mean with the left-right mirrored slice's output)",
    "--naming": "output names: dygan (<case>_<target>_synth.nii.gz) or brasyn "
    "(<case>-<t1n|t1c|t2w|t2f>.nii.gz, BraSyn's submission names)",
    "--allow-untrained": "also write targets the model was not trained for from what the "
    "input holds (refused otherwise), each marked by a .untrained.json record",
    "--allow-changed-data": "use a run folder whose shards changed since it trained "
    "(refused otherwise: its model card would describe other data)",
    "--quiet": "no progress lines; only where results went",
}


def main(argv=None):
    p = ArgumentParser(prog="dygan-translate", description=__doc__.splitlines()[0])
    for flag in ("--model", "--input"):
        p.add_argument(flag, required=True, help=HELP[flag])
    p.add_argument("--source", help=HELP["--source"])
    p.add_argument("--targets", help=HELP["--targets"])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--batch", default=4, help=HELP["--batch"])  # checked by translate_input
    p.add_argument("--overwrite", action="store_true", help=HELP["--overwrite"])
    p.add_argument("--tta", choices=TTA_MODES, default="none", help=HELP["--tta"])
    p.add_argument("--naming", choices=OUTPUT_NAMINGS, default="dygan", help=HELP["--naming"])
    for flag in ("--allow-untrained", "--allow-changed-data", "--quiet"):
        p.add_argument(flag, action="store_true", help=HELP[flag])
    args = p.parse_args(argv)
    ok = translate_input(args.model, args.input, args.out_dir, args.source, args.targets,
        args.naming, args.overwrite, args.batch, not args.quiet, args.allow_untrained, args.tta,
        args.allow_changed_data, FLAGS)  # fmt: skip
    return 0 if ok else 1


def cli():
    """The installed `dygan-translate` command (pyproject.toml's [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
