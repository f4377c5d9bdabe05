"""How much of a row's error is one intensity scale per case.

    python -m benchmarks.case_gain --run RUN_DIR --row "t1+t1ce+t2->flair" \\
        [--data DIR] [--split test] [--out FILE.json]

Every sequence is scaled by its volume's 99.5th brain percentile, so a synthesised
slice can be right in shape and wrong by a factor the slice alone does not show (in
FLAIR that percentile moves with the volume's amount of oedema). For each case of the
split this multiplies the model's slices of `--row`, mapped to [0, 1], by the one
least-squares gain that best fits that case's real slices, and reports the slice PSNR
before and after, with the gains' mean and spread. A row whose PSNR rises by several dB
is limited by the per-case scale, not by what the model draws.
"""

import os

from dygan_tf.evaluation.case_gain import score_run, summary
from dygan_tf.evaluation.rows import run_row_main
from dygan_tf.utils.cli import run_main


def main(argv=None):
    return run_row_main(argv, "benchmarks.case_gain", __doc__.splitlines()[0], score_run, summary)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
