"""Where a row's error lies: squared error per tissue region, for a model and the LUT.

    python -m research.region_error --run RUN_DIR --row "t1->t1ce" \
        [--data DIR] [--split test] [--out FILE.json]

A row's PSNR is one mean over the whole slice. This splits the squared error of the
model's slices (images in [0, 1]) by the seg and brain masks: background, healthy
brain, oedema (label 2), necrotic core (1) and enhancing rim (4); per region its
voxels, its mean squared error and its share of the total, beside the same numbers for
the intensity-LUT baseline (fitted on the training split; for a row of several
sources, the source whose LUT errs least). A model that loses to the LUT only inside
the tumour draws the lesion wrong; one that loses in healthy brain has a texture or
scale problem (docs/reference/cli.md).
"""

import os

import numpy as np

from dygan_tf.data.layouts import OEDEMA
from dygan_tf.utils.errors import UserError
from research.rows import open_run_row, run_as_command, run_row_main

# (name, test on (seg, brain, enhancing label)) in report order; they partition every
# slice: a labelled voxel counts as tumour even where the resampled brain mask misses it,
# and a label other than oedema (2) and enhancing (4 in BraTS 2017-2021, 3 in BraTS 2023
# GLI: `dygan_tf.data.layouts.enhancing_label`) as necrotic core.
REGIONS = (
    ("background", lambda seg, brain, et: ~brain & (seg == 0)),
    ("healthy brain", lambda seg, brain, et: brain & (seg == 0)),
    ("oedema", lambda seg, brain, et: seg == OEDEMA),
    ("necrotic core", lambda seg, brain, et: (seg > 0) & (seg != OEDEMA) & (seg != et)),
    ("enhancing rim", lambda seg, brain, et: seg == et),
)


class RegionErrors:
    """Sums of squared error and voxel counts per region, over batches."""

    def __init__(self, enhancing=4):
        self.enhancing = enhancing  # the enhancing tumour's seg label
        self.sums = dict.fromkeys((name for name, _ in REGIONS), 0.0)
        self.voxels = dict.fromkeys(self.sums, 0)

    def add(self, truth, fake, seg, brain_mask):
        """`truth`, `fake` in [-1, 1] (fake clipped there), masks of the same shape."""
        truth = np.asarray(truth, np.float64)
        fake = np.clip(np.asarray(fake, np.float64), -1.0, 1.0)
        if truth.shape != fake.shape or np.shape(seg) != truth.shape:
            raise ValueError(
                f"truth, fake and seg must match. Received: {truth.shape}, {fake.shape}, "
                f"{np.shape(seg)}"
            )
        error = ((fake - truth) / 2) ** 2  # on [0, 1] images, as PSNR
        seg, brain = np.asarray(seg), np.asarray(brain_mask) > 0
        for name, test in REGIONS:
            where = test(seg, brain, self.enhancing)
            self.sums[name] += float(error[where].sum())
            self.voxels[name] += int(where.sum())

    def total_mse(self):
        return sum(self.sums.values()) / max(sum(self.voxels.values()), 1)

    def result(self):
        """{region: {voxels, mse, share}} plus "all": {voxels, mse}."""
        total = sum(self.sums.values())
        out = {
            name: {
                "voxels": self.voxels[name],
                "mse": self.sums[name] / self.voxels[name] if self.voxels[name] else None,
                "share": self.sums[name] / total if total else 0.0,
            }
            for name in self.sums
        }
        out["all"] = {"voxels": sum(self.voxels.values()), "mse": self.total_mse()}
        return out


def score_run(run_dir, row, data_dir=None, split="test"):
    """The region errors of a run folder's model and of the intensity LUT on one row."""
    from dygan_tf.config import conditions
    from dygan_tf.data import layouts
    from dygan_tf.data.manifest import read_manifest, split_cases
    from dygan_tf.data.pipeline import make_dataset
    from dygan_tf.evaluation import scoring, slice_scores

    predictor, _, data_dir, the_row = open_run_row(run_dir, row, data_dir)
    available, target = the_row.available, the_row.target
    singles = [conditions.row_key((a,), target) for a in available]
    manifest = read_manifest(data_dir)
    cases = [c["case_id"] for c in split_cases(data_dir, split)]
    enhancing = layouts.enhancing_label(manifest.get("layout"), cases)
    lut = scoring.fit_luts(data_dir, (target,))
    model = RegionErrors(enhancing)
    luts = {key: RegionErrors(enhancing) for key in singles}
    table = [the_row] + [
        conditions.Row(key, (a,), target) for a, key in zip(available, singles) if key != row
    ]
    dataset = make_dataset(data_dir, split, inputs="multi", rows=table, return_meta=True)
    slices = 0
    for image4, real, cond, meta in dataset:
        image4, real, cond = image4.numpy(), real.numpy(), cond.numpy()
        keys = slice_scores.row_names(meta)
        seg, brain = meta["seg"].numpy(), meta["brain_mask"].numpy()
        slices += 1
        i = keys.index(row)
        if predictor.inputs == "multi":
            image, task = image4[[i]], cond[[i]]
        else:
            image, task = scoring.as_single(image4, keys, [i])
        fake = predictor(image, task)
        model.add(real[[i]], fake, seg[[i]], brain[[i]])
        for key in singles:
            j = keys.index(key)
            lut_fake = lut(scoring.as_single(image4, keys, [j])[0], [key])
            luts[key].add(real[[j]], lut_fake, seg[[j]], brain[[j]])
    if not slices:
        raise UserError(f"--split: {split!r} of {data_dir} has no slices")
    best = min(singles, key=lambda key: luts[key].total_mse())
    where = {"run": os.path.abspath(run_dir), "row": row, "split": split, "slices": slices}
    return {**where, "model": model.result(), "lut_source": best, "lut": luts[best].result()}


def table_text(result):
    """The result as a plain-text table, one line a region."""
    lines = [
        f"{result['row']}, {result['slices']} slices "
        f"(LUT from {result['lut_source'].split('->')[0]}): squared error on [0, 1] images",
        f"{'region':15} {'voxels':>8} {'model MSE':>10} {'share':>6} {'LUT MSE':>10} {'share':>6}",
    ]
    for name, _ in REGIONS + (("all", None),):
        m, lut = result["model"][name], result["lut"][name]
        mse = [f"{x['mse']:10.2e}" if x["mse"] is not None else f"{'-':>10}" for x in (m, lut)]
        share = [f"{x['share']:6.2f}" if "share" in x else f"{'':6}" for x in (m, lut)]
        lines.append(f"{name:15} {m['voxels']:8d} {mse[0]} {share[0]} {mse[1]} {share[1]}")
    return "\n".join(lines)


def main(argv=None):
    prog = "research.region_error"
    return run_row_main(argv, prog, __doc__.splitlines()[0], score_run, table_text)


if __name__ == "__main__":
    run_as_command(main)
