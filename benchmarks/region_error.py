"""Where a row's error lies: squared error per tissue region, for a model and the LUT.

    python -m benchmarks.region_error --run RUN_DIR --row "t1->t1ce" \\
        [--data DIR] [--split test] [--out FILE.json]

A row's PSNR is one mean over the whole slice. This splits the squared error of the
model's slices (images in [0, 1]) by the seg and brain masks: background, healthy
brain, oedema (label 2), necrotic core (1) and enhancing rim (4); per region its
voxels, its mean squared error and its share of the total, beside the same numbers for
the intensity-LUT baseline (fitted on the training split; for a row of several
sources, the source whose LUT errs least). A model that loses to the LUT only inside
the tumour draws the lesion wrong; one that loses in healthy brain has a texture or
scale problem.
"""

import os

from dygan_tf.evaluation.region_error import score_run, table_text
from dygan_tf.evaluation.rows import run_row_main
from dygan_tf.utils.cli import run_main


def main(argv=None):
    return run_row_main(
        argv, "benchmarks.region_error", __doc__.splitlines()[0], score_run, table_text
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
