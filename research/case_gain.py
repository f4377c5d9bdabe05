"""How much of a row's error is one intensity scale per case.

    python -m research.case_gain --run RUN_DIR --row "t1+t1ce+t2->flair" \
        [--data DIR] [--split test] [--out FILE.json]

Every sequence is scaled by its volume's 99.5th brain percentile, so a synthesised
slice can be right in shape and wrong by a factor the slice alone does not show (in
FLAIR that percentile moves with the volume's amount of oedema). For each case of the
split this multiplies the model's slices of `--row`, mapped to [0, 1], by the one
least-squares gain that best fits that case's real slices, and reports the slice PSNR
before and after, with the gains' mean and spread. A row whose PSNR rises by several dB
is limited by the per-case scale, not by what the model draws (docs/reference/cli.md).
"""

import collections
import os

import numpy as np

from dygan_tf.utils.errors import UserError
from research.rows import open_run_row, run_as_command, run_row_main


def case_gain_scores(truth, fake, case_ids):
    """Slice PSNR of `fake` against `truth` ((N, H, W, 1) in [-1, 1]) as they are and
    after each case's best gain on [0, 1] images.

    Returns a dict: `psnr`, `psnr_case_gain` (means over slices, dB), `gain_mean`,
    `gain_std` (over cases) and `gains` ({case id: gain}).
    """
    from keras.ops import convert_to_numpy

    from dygan_tf.utils import image_metrics as metrics

    truth = np.asarray(truth, np.float64)
    fake = np.clip(np.asarray(fake, np.float64), -1.0, 1.0)
    if truth.shape != fake.shape or len(case_ids) != len(truth):
        raise ValueError(
            f"truth, fake and case_ids must match. Received: {truth.shape}, {fake.shape}, "
            f"{len(case_ids)} case ids"
        )
    t, p = (truth + 1) / 2, (fake + 1) / 2
    rows = collections.defaultdict(list)
    for i, case in enumerate(case_ids):
        rows[case].append(i)
    gains, fitted = {}, np.empty_like(p)
    for case, index in rows.items():
        denominator = np.sum(p[index] ** 2)
        gains[case] = float(np.sum(t[index] * p[index]) / denominator) if denominator else 1.0
        fitted[index] = np.clip(gains[case] * p[index], 0.0, 1.0)
    as_is = convert_to_numpy(metrics.psnr(truth.astype(np.float32), fake.astype(np.float32)))
    scaled = convert_to_numpy(
        metrics.psnr(truth.astype(np.float32), (2 * fitted - 1).astype(np.float32))
    )
    values = np.array(list(gains.values()))
    return {
        "psnr": float(np.mean(as_is)),
        "psnr_case_gain": float(np.mean(scaled)),
        "gain_mean": float(values.mean()),
        "gain_std": float(values.std()),
        "gains": gains,
    }


def score_run(run_dir, row, data_dir=None, split="test"):
    """`case_gain_scores` of a run folder's generator on one row of a shard split."""
    from dygan_tf.config.tasks import MODALITIES
    from dygan_tf.data.pipeline import make_dataset

    predictor, config, data_dir, the_row = open_run_row(run_dir, row, data_dir)
    table = [the_row]
    dataset = make_dataset(
        data_dir,
        split,
        source="any",
        targets=MODALITIES,
        inputs=config.model.inputs,
        rows=table,
        return_meta=True,
        batch_slices=16,
    )
    truth, fake, cases = [], [], []
    for image, real, task, meta in dataset:
        fake.append(predictor(image.numpy(), task.numpy()))
        truth.append(real.numpy())
        cases += [c.decode() for c in meta["case_id"].numpy()]
    if not cases:
        raise UserError(f"--split: {split!r} of {data_dir} has no slices")
    scores = case_gain_scores(np.concatenate(truth), np.concatenate(fake), cases)
    where = {"run": os.path.abspath(run_dir), "row": row, "split": split, "slices": len(cases)}
    return {**where, **scores}


def summary(result):
    """The one line the command prints."""
    return (
        f"{result['row']}: PSNR {result['psnr']:.2f} dB as synthesised, "
        f"{result['psnr_case_gain']:.2f} dB after each case's best gain "
        f"(gains {result['gain_mean']:.3f} +- {result['gain_std']:.3f} over "
        f"{len(result['gains'])} cases, {result['slices']} slices)"
    )


def main(argv=None):
    prog = "research.case_gain"
    return run_row_main(argv, prog, __doc__.splitlines()[0], score_run, summary)


if __name__ == "__main__":
    run_as_command(main)
