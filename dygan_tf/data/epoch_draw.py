"""Which slices one epoch of training draws from a shard folder: every slice once (the
paper's shards, 5 slices a case), or, from shards of every brain slice
(`--source-slices all`), the same number from every case, drawn anew each epoch.

The manifest's "epoch_draw" field says which (shards without it: every slice). Pure
Python and numpy; `dygan_tf.data.pipeline` reads what `draw` chooses.
"""

import numpy as np

FIELD = "epoch_draw"
EVERY_SLICE = "every_slice"
PER_CASE = "per_case"
RULES = {
    EVERY_SLICE: "each epoch reads every slice of the training cases once",
    PER_CASE: "each epoch draws from every training case as many of its slices as the "
    "training case with the fewest holds: without replacement, anew each epoch from the "
    "run's seed and the epoch, so every case weighs the same however many slices it has",
}


def record(kind):
    """The manifest's "epoch_draw" field of `kind`."""
    return {"kind": kind, "rule": RULES[kind]}


def kind_of(manifest):
    """EVERY_SLICE or PER_CASE: how an epoch draws from these shards (manifests written
    before the field: EVERY_SLICE). `manifest.read_manifest` refuses other kinds."""
    return manifest.get(FIELD, {}).get("kind", EVERY_SLICE)


def per_case(manifest, cases):
    """Slices an epoch draws from each of `cases` (manifest case entries, the training
    cases a run keeps): None for EVERY_SLICE shards (all of each), else the fewest that
    any of them holds."""
    if kind_of(manifest) == EVERY_SLICE or not cases:
        return None
    return min(len(c["slices"]) for c in cases)


def epoch_slices(manifest, cases):
    """How many slices one epoch draws from `cases`."""
    count = per_case(manifest, cases)
    if count is None:
        return sum(len(c["slices"]) for c in cases)
    return count * len(cases)


def draw(cases, count, seed):
    """{case id: sorted slice indices}: `count` of each case's slices (every one of a case
    that holds fewer), without replacement, from one generator seeded with `seed` that
    walks the cases in id order. The same `seed` gives the same draw.

    >>> cases = [{"case_id": "b", "slices": [3, 4, 5]}, {"case_id": "a", "slices": [7]}]
    >>> drawn = draw(cases, 2, seed=0)
    >>> drawn["a"], len(drawn["b"]), drawn == draw(cases, 2, seed=0)
    ([7], 2, True)
    """
    if count < 1:
        raise ValueError(f"count must be >= 1. Received: count={count}")
    rng = np.random.default_rng(seed)
    drawn = {}
    for case in sorted(cases, key=lambda c: c["case_id"]):
        slices = list(case["slices"])
        if len(slices) > count:
            picked = rng.choice(len(slices), count, replace=False)
            slices = [slices[i] for i in picked]
        drawn[case["case_id"]] = sorted(int(k) for k in slices)
    return drawn
