"""Whole-volume evaluation of synthesised MR sequences against the real ones: ours and BraSyn's.

    dygan-evaluate-volumes --pred DIR --truth BRATS_ROOT
        [--split-from SHARD_DIR|SHARD_DIR/manifest.json --split test] --out DIR
        [--lut-from TRAIN_SHARD_DIR] [--brasyn-ssim full|crop]

Every NIfTI file under --pred whose name holds a case id of --truth and one modality
token is scored against that case's real volume. Ours: PSNR and 3-D SSIM over the
brain, inside the tumour and outside it (each volume scaled by its own brain
percentiles). BraSyn's: the challenge's own tumour and non-tumour SSIM, exactly as its
ssim.py computes them (`dygan_tf.evaluation.volume_metrics.brasyn_ssim`; its
segmentation-based score is not reproduced). Writes per_case.csv, summary.md and
summary.json.
"""

from dygan_tf.evaluation.volumes import BRASYN_SSIM, evaluate_volumes, output_paths
from dygan_tf.utils.cli import ArgumentParser, command
from dygan_tf.utils.errors import UserError


def main(argv=None):
    parser = ArgumentParser(prog="dygan-evaluate-volumes", description=__doc__.splitlines()[0])
    parser.add_argument("--pred", required=True, help="folder of synthesised NIfTI volumes")
    parser.add_argument("--truth", required=True, help="BraTS root holding the real volumes")
    parser.add_argument(
        "--split-from", help="shard folder (or its manifest.json) whose split lists the cases"
    )
    parser.add_argument("--split", help="split of --split-from to evaluate (default: test)")
    parser.add_argument("--out", required=True, help="folder for the CSV, Markdown and JSON")
    parser.add_argument(
        "--lut-from",
        help="training shard folder (or its manifest.json): the intensity-LUT baseline is "
        "fitted on its train split, read from the BraTS root its manifest names (default: "
        "--split-from's train split, read from --truth)",
    )
    parser.add_argument(
        "--brasyn-ssim",
        choices=BRASYN_SSIM,
        default="full",
        help="BraSyn's SSIM as torchmetrics >= 1.4.2 computes it (full, the default) or "
        "as <= 1.4.1 did (crop: 5 voxels off every side)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress or table; only where results went"
    )
    args = parser.parse_args(argv)
    if args.split is not None and args.split_from is None:
        raise UserError(
            "--split: needs --split-from, the shard folder whose manifest lists the split"
        )
    summary = evaluate_volumes(
        args.pred,
        args.truth,
        args.out,
        split_from=args.split_from,
        split=args.split or "test",
        verbose=not args.quiet,
        brasyn_ssim_mode=args.brasyn_ssim,
        lut_from=args.lut_from,
    )
    if args.quiet:  # quiet, but never silent about where the results went
        print(f"{summary['cases']} cases; wrote {', '.join(output_paths(args.out))}")


cli = command(main)


if __name__ == "__main__":
    cli()
