"""Exports a trained generator as a TF Serving SavedModel, with metadata.json beside it.

    dygan-export --run RUN_DIR --out saved_models/<name>/<version>

The SavedModel's `serving_default` signature takes `image` float32 (None, H, W, 1) in
[-1, 1] and `task` float32 (None, 12) and returns `synthesized` (None, H, W, 1); a
multi-source model's takes `image` (None, H, W, 4) (flair, t1, t1ce, t2; a missing one
filled with 0), `available` (None, 4) and `target` (None, 4) (one-hot). It is a plain
TensorFlow graph: serving it needs TensorFlow only, not this package. `--tta flip`
(ours) makes the signature return the left-right flip-averaged output (`dygan_tf.inference.tta`;
twice the work per request), recorded as "tta" in metadata.json.
"""

import os

from dygan_tf.inference import tta
from dygan_tf.inference.savedmodel import export_run
from dygan_tf.utils.cli import ArgumentParser, run_main


def main(argv=None):
    parser = ArgumentParser(prog="dygan-export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run", required=True, help="training run folder (config.json, generator.keras)"
    )
    parser.add_argument("--out", required=True, help="version folder, e.g. saved_models/dygan/1")
    parser.add_argument(
        "--tta",
        choices=tta.TTA_MODES,
        default="none",
        help="flip: the signature returns the mean with the left-right mirrored slice's output",
    )
    args = parser.parse_args(argv)
    export_run(args.run, args.out, args.tta, {"run_dir": "--run", "out_dir": "--out"})


def cli():
    """The installed `dygan-export` command (pyproject.toml's [project.scripts])."""
    # A SavedModel is a TensorFlow graph: the export runs on TensorFlow whatever
    # KERAS_BACKEND says (a generator.keras trained on JAX or PyTorch loads here too).
    os.environ["KERAS_BACKEND"] = "tensorflow"
    run_main(main)


if __name__ == "__main__":
    cli()
