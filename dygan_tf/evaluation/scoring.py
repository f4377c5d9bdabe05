"""Scores trained models and the two baselines on a split, row by row.

The rows scored are those of the first run's kind (`dygan_tf.config.conditions.row_table`):
the paper's three T2 rows, the 12 tasks of a `--source any` run, or the 28 target x
available-set rows of a multi-source run. Every other model scores the rows it was
trained for among them, fed in its own form (one channel and a 12-bit task code, or
four channels and the 8-bit condition), so runs of different kinds compare on the
rows they share.

Baselines: copy_source (the source slice itself) and intensity_lut (per source and
target, source intensity -> mean target intensity on the training split of
`baseline`: the evaluated folder's own, or the one its manifest names in
`baseline_from`, so a test set of another anatomy is not fitted in-domain). For a row
with several available modalities each baseline uses the one that scores best on that
row: the harder baseline to beat.
"""

import numpy as np

from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES, task_code
from dygan_tf.evaluation import slice_scores

BASELINES = ("copy_source", "intensity_lut")
# In `score_rows`' results: {row key: {case id: mean slice PSNR}} of the first predictor
# (for statistics that resample test cases).
PER_CASE = "per_case_psnr"
_INDEX = {m: i for i, m in enumerate(MODALITIES)}


def check_shards_fit(predictors, shards):
    """Refuses shards (a `ShardFolder`, or its path) of another slice size than a
    model's, or with fewer axial neighbours than it reads (`--context`), in one line."""
    from dygan_tf.data.shard_folder import open_shards

    shards = open_shards(shards)
    for p in predictors:
        shards.require_image_size(
            p.image_size,
            p.name,
            f"score it on shards built at {p.image_size} px "
            f"(dygan-build-tfrecords --image-size {p.image_size})",
        )
        shards.require_context(
            p.context,
            p.name,
            f"score it on shards built with dygan-build-tfrecords --context {p.context}",
        )


def _single_rows(keys, wanted=None):
    """Indices of the single-source rows among `keys` (and in `wanted`, if given)."""
    return [
        i
        for i, key in enumerate(keys)
        if "+" not in key.split("->")[0] and (wanted is None or key in wanted)
    ]


def as_single(image4, keys, index, context=0):
    """(1-channel images, 12-bit codes) of single-source rows `index` of a four-
    modality image; with `context` K, (2K + 1)-channel images: the source's planes."""
    pairs = [conditions.parse_row_key(keys[i]) for i in index]
    image = image4[index, ..., : 2 * context + 1].copy()
    for row, (available, _) in enumerate(pairs):
        channels = conditions.context_channels([_INDEX[available[0]]], context)
        image[row] = image4[index[row]][..., channels]
    codes = np.stack([task_code(a[0], t) for a, t in pairs]) if pairs else np.zeros((0, 12))
    return image, codes.astype(np.float32)


def fit_luts(shards, targets):
    """IntensityLUTs for every source -> target of `targets`, on the training split of
    `shards` (a `ShardFolder`, or its path), keyed by row key ("t2->flair")."""
    from dygan_tf.data.pipeline import make_dataset

    ds = make_dataset(
        shards,
        "train",
        source=conditions.SOURCE_ANY,
        targets=targets,
        batch_slices=8,
        return_meta=True,
    )
    keys = [r.key for r in conditions.row_table("single", conditions.SOURCE_ANY, targets)]
    lut = slice_scores.IntensityLUT(keys)
    for image, target, _, meta in ds:
        lut.update(image.numpy(), target.numpy(), slice_scores.row_names(meta))
    return lut.finish()


def score_rows(predictors, shards, split, table, figure_cases=4, baseline=None):
    """Scores every predictor and both baselines on the rows of `table` of `shards`'
    `split` (a `ShardFolder`, or its path); the LUT is fitted on the training split of
    `baseline` (a `ShardFolder` or a path; default: `shards`).

    Returns (results {method: {row key: {metric: mean}}}, slices, figure) where
    figure holds, for up to `figure_cases` cases, (case, slice index, keys, image4,
    real, fake of the first predictor) of one slice.
    """
    from dygan_tf.data.pipeline import data_loss_named
    from dygan_tf.data.shard_folder import open_shards

    shards = open_shards(shards)
    baseline = shards if baseline is None else open_shards(baseline)
    with data_loss_named(shards, ["train", split]):
        return _score_rows(predictors, shards, split, table, figure_cases, baseline)


def _score_rows(predictors, shards, split, table, figure_cases, baseline):
    from dygan_tf.data.pipeline import make_dataset

    single_keys = {s.key for r in table for s in _single_rows_of(r)}
    targets = sorted({r.target for r in table}, key=MODALITIES.index)
    lut = fit_luts(baseline, targets)
    acc = {p.name: slice_scores.Accumulator(()) for p in predictors}
    acc.update({b: slice_scores.Accumulator(()) for b in BASELINES})
    per_case = slice_scores.Accumulator(())  # the first predictor's PSNR by (row key, case)
    figure, seen, slices = [], set(), 0
    # The most axial neighbours any model reads; each is fed its own (`context_channels`).
    context = max((p.context for p in predictors), default=0)
    ds = make_dataset(
        shards, split, inputs="multi", rows=_with_singles(table), return_meta=True, context=context
    )
    modalities = range(len(MODALITIES))
    for planes, target, cond, meta in ds:
        planes, target, cond = planes.numpy(), target.numpy(), cond.numpy()
        image4 = planes[..., conditions.context_channels(modalities, 0, context)]  # the slices
        keys = slice_scores.row_names(meta)
        masks = {k: v.numpy() for k, v in meta.items() if k in ("brain_mask", "seg")}
        slices += 1
        batch = (keys, target, masks)
        singles = _single_rows(keys, single_keys)
        if singles:
            image1 = as_single(image4, keys, singles)[0]
            _add_scores(acc["copy_source"], batch, singles, image1)
            lut_fake = lut(image1, [keys[i] for i in singles])
            _add_scores(acc["intensity_lut"], batch, singles, lut_fake)
        primary_fake = None
        for p in predictors:
            rows = p.trained_rows
            fed = planes[..., conditions.context_channels(modalities, p.context, context)]
            if p.inputs == "multi":
                index = [i for i, k in enumerate(keys) if rows is None or k in rows]
                image, task = fed[index], cond[index]
            else:
                index = _single_rows(keys, rows)
                image, task = as_single(fed, keys, index, p.context)
            if not index:
                continue
            fake = p(image, task)
            _add_scores(acc[p.name], batch, index, fake)
            if p is predictors[0]:
                primary_fake = dict(zip(index, fake))
                cases = [c.decode() for c in meta["case_id"].numpy()[index]]
                psnr = slice_scores.row_scores(target[index], fake, metrics=("psnr",))
                per_case.add([f"{keys[i]}@{c}" for i, c in zip(index, cases)], psnr)
        case = meta["case_id"].numpy()[0].decode()
        if case not in seen and len(figure) < figure_cases and primary_fake:
            seen.add(case)
            slice_index = int(meta["slice_index"].numpy()[0])
            figure.append((case, slice_index, keys, image4, target, primary_fake))
    results = {name: a.means() for name, a in acc.items()}
    for b in BASELINES:  # several available: the best single source's score
        results[b] = best_single_source(results[b], [r.key for r in table])
    results[PER_CASE] = {}
    for name, means in per_case.means().items():
        key, case = name.split("@", 1)
        results[PER_CASE].setdefault(key, {})[case] = means["psnr"]
    return results, slices, figure


def _add_scores(accumulator, batch, index, fake):
    """Scores of `fake` against rows `index` of `batch` = (keys, target, masks)."""
    keys, target, masks = batch
    sub = {k: v[index] for k, v in masks.items()}
    accumulator.add([keys[i] for i in index], slice_scores.row_scores(target[index], fake, sub))


def _single_rows_of(row):
    """The single-source rows of `row`'s available set, for the same target."""
    return [
        conditions.Row(conditions.row_key((a,), row.target), (a,), row.target)
        for a in row.available
    ]


def _with_singles(table):
    """`table` plus the single-source rows of its available sets (the baselines'),
    appended once each."""
    extra = {}
    for row in table:
        for single in _single_rows_of(row):
            extra.setdefault(single.key, single)
    keys = {r.key for r in table}
    return list(table) + [r for key, r in extra.items() if key not in keys]


def best_single_source(scores, keys):
    """{key: metrics} for `keys`, a row of several sources taking the metrics of its
    best-PSNR single source (`scores` holds the single-source rows)."""
    out = {}
    for key in keys:
        available, target = conditions.parse_row_key(key)
        options = [scores.get(conditions.row_key((a,), target)) for a in available]
        options = [o for o in options if o and o.get("psnr") is not None]
        out[key] = max(options, key=lambda o: o["psnr"]) if options else None
    return out
