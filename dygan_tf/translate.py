"""Translates whole MR volumes into the missing modalities with a trained DyGAN.

    dygan-translate --model SAVEDMODEL_DIR|RUN_DIR --input FILE.nii[.gz]
        --source t2 [--targets flair,t1,t1ce] --out-dir DIR [--batch 4] [--overwrite]
        [--tta flip]
    dygan-translate --model M --input BRATS_CASE_FOLDER --out-dir DIR
    dygan-translate --model M --input BRATS_ROOT --out-dir DIR [--naming brasyn]

Writes DIR/<case>_<target>_synth.nii.gz (`--naming brasyn`: BraSyn's
DIR/<case>-<t1n|t1c|t2w|t2f>.nii.gz) with the input's shape, affine and header (float32
data). A case folder (<ID>_{t1,t1ce,t2,flair}.nii[.gz], or BraTS 2023's
<ID>-{t1n,t1c,t2w,t2f}.nii[.gz]) is completed: each
modality it lacks is synthesised from one it holds (a single-source model) or from all
it holds (a multi-source model). `--tta flip` (ours) writes the mean of each slice's
output and the mirrored output of its left-right mirror (`dygan_tf.inference.tta`; twice the work).

A folder of case folders (any BraTS layout) completes every case that misses a
modality, all outputs into DIR: a case whose outputs exist is skipped (`--overwrite`
redoes it), a failing case is one `failed:` line and the others go on; a summary table
ends the run, and the exit status is 1 if any case failed.

A target the model was not trained for from what a case holds (a T2 model and a case
without T2) is refused: one `refused:` line naming the case, the task and the tasks the
model knows, nothing written for it, the case's other targets still written, and exit
status 1. `--allow-untrained` writes it anyway, marked `untrained` in the summary and by
a `<output>.untrained.json` record beside the output.
"""

from dygan_tf.config.tasks import check_modality
from dygan_tf.inference import tta
from dygan_tf.inference.batch_translation import is_root, summary_table, translate_root
from dygan_tf.inference.model_card import data_source_line
from dygan_tf.inference.translation import (
    OUTPUT_NAMINGS,
    check_naming,
    check_outputs,
    parse_targets,
    plan_input,
    run_plan,
)
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError, for_flag


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.source is not None:
        with for_flag("--source"):
            args.source = check_modality(args.source, "source modality")
    if args.batch < 1:
        raise UserError(f"--batch: expected a positive number of slices, found {args.batch}")
    with for_flag("--targets"):
        targets = parse_targets(args.targets)
    with for_flag("--out-dir"):
        check_naming(args.input, args.out_dir, args.naming)
    from dygan_tf.inference.synthesis import load_synthesizer

    def load_model():
        from dygan_tf.run_folder.data_record import ChangedData

        try:
            with for_flag("--model"):
                synthesizer = load_synthesizer(args.model, args.tta, args.allow_changed_data)
        except ChangedData as e:
            raise UserError(f"{e}; --allow-changed-data translates with it anyway") from None
        if not args.quiet:  # what the model was trained on comes first
            print(f"{synthesizer.path}: {data_source_line(synthesizer.model_card)}", flush=True)
        return synthesizer

    if is_root(args.input):  # a folder of cases: every case that misses a modality
        with for_flag("--input"):
            rows = translate_root(
                args.input,
                args.out_dir,
                load_model,
                args.source,
                targets,
                args.naming,
                args.overwrite,
                args.batch,
                verbose=not args.quiet,
                allow_untrained=args.allow_untrained,
            )
        print(summary_table(rows))
        return 1 if any(r["status"] in ("failed", "refused") for r in rows) else 0
    with for_flag("--input"):
        plan = plan_input(args.input, args.source, targets, args.naming)
    with for_flag("--out-dir"):
        check_outputs(plan.out_paths(args.out_dir).values(), plan.inputs.values(), args.overwrite)
    outcome = run_plan(
        plan, args.out_dir, load_model, args.batch, not args.quiet, args.allow_untrained
    )
    if args.quiet and outcome.written:  # quiet, but never silent about where results went
        print(f"wrote {', '.join(outcome.written.values())}")
    return 1 if outcome.refused else 0


def _parser():
    parser = ArgumentParser(prog="dygan-translate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        help="SavedModel folder (or TF Serving base path) or training run folder",
    )
    parser.add_argument("--input", required=True, help="a NIfTI volume or a BraTS case folder")
    parser.add_argument(
        "--source",
        help="modality of --input: flair, t1, t1ce, t2 or t2f, t1n, t1c, t2w, any case "
        "(default for a file: from its name; for a folder: t2, t1, flair, t1ce, first present)",
    )
    parser.add_argument(
        "--targets",
        help="comma-separated target modalities (default: the "
        "other three; in a folder: the missing ones)",
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--batch",
        type=int,
        default=4,
        help="axial slices per model call (each expands into one row per target)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input file)"
    )
    parser.add_argument(
        "--tta",
        choices=tta.TTA_MODES,
        default="none",
        help="test-time augmentation (flip: mean with the left-right mirrored slice's output)",
    )
    parser.add_argument(
        "--naming",
        choices=OUTPUT_NAMINGS,
        default="dygan",
        help="output names: dygan (<case>_<target>_synth.nii.gz) or brasyn "
        "(<case>-<t1n|t1c|t2w|t2f>.nii.gz, BraSyn's submission names)",
    )
    parser.add_argument(
        "--allow-untrained",
        action="store_true",
        help="also write targets the model was not trained for from what the input "
        "holds (refused otherwise), each marked by a .untrained.json record",
    )
    parser.add_argument(
        "--allow-changed-data",
        action="store_true",
        help="use a run folder whose shards changed since it trained (refused otherwise: "
        "its model card would describe other data)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress lines; only where results went"
    )
    return parser


def cli():
    """The installed `dygan-translate` command (pyproject.toml's [project.scripts])."""
    run_main(main)


if __name__ == "__main__":
    cli()
