"""What a model is asked to do, per example: the rows a slice expands into and the
condition code that steers every DyConv.

Two kinds of input (`ModelConfig.inputs`):
- "single" (the paper's): one source slice, 1 channel; the condition is the 12-bit
  task code of `dygan_tf.config.tasks`. The source is fixed (`--source t2`) or, with
  `--source any`, cycles so that all 12 tasks are trained equally often.
- "multi" (ours): the four modalities as four channels in MODALITIES order (flair,
  t1, t1ce, t2), each missing one filled with FILL_VALUE; the condition is the 4-bit
  availability mask followed by the 4-bit target one-hot (8 values). The target is
  never available: its own image cannot reach the generator.

With `--context K` (2.5-D) each modality brings 2K + 1 channels instead of one: the
axial planes k - K .. k + K around slice k, in that order (BEYOND_VOLUME past the
volume's ends). Channels are modality-major: modality i's plane k + o is channel
i * (2K + 1) + K + o (`context_channels`), so K = 0 is the layout above.

A *row* is one (available set, target) pair; `row_table` lists a run's rows in a
fixed order and `row_key` names them ("t2->flair", "t1+t1ce+t2->flair").
"""

import itertools
from typing import NamedTuple

import numpy as np

from dygan_tf.config.tasks import MODALITIES, NUM_TASKS, check_modality, task_code
from dygan_tf.utils.errors import UserError

INPUTS = ("single", "multi")
SOURCE_ANY = "any"  # --source any: every modality in turn
FILL_VALUE = 0.0  # a missing channel (mid-grey in [-1, 1]); its mask bit says it is missing
# `--context K` (2.5-D): a slice k comes with its axial neighbours k-K..k+K. A plane
# beyond the volume's ends holds this value, as a missing modality does: not background
# (-1), which would claim the scan saw empty space there.
BEYOND_VOLUME = 0.0
CONDITION_SIZE = 2 * len(MODALITIES)  # availability mask + target one-hot
ROWS_PER_SLICE = 3  # the paper's: one slice, three targets
# A single-source model given a case picks its source in this order: T2 first because
# it is the paper's (and the default training run's) source.
SOURCE_PREFERENCE = ("t2", "t1", "flair", "t1ce")


class Row(NamedTuple):
    """One thing a model is asked: synthesise `target` from the `available` modalities."""

    key: str
    available: tuple
    target: str


def row_key(available, target):
    """The name of a row: "t2->flair"; several sources joined by "+" (MODALITIES order)."""
    return "+".join(m for m in MODALITIES if m in available) + "->" + target


def parse_row_key(key):
    """(available tuple, target) of a `row_key`; ValueError for anything else."""
    sources, sep, target = str(key).partition("->")
    available = tuple(sources.split("+")) if sources else ()
    try:
        if not sep or not available:
            raise ValueError
        # Any spelling of each modality (t1n+t2w->t2f is t1+t2->flair).
        return tuple(check_modality(m) for m in available), check_modality(target)
    except ValueError:
        raise ValueError(f"Not a row key like 't2->flair'. Received: key={key!r}") from None


def check_condition(available, target):
    """The sorted available tuple; UserError for an empty set or a target among them."""
    target = check_modality(target, "target modality")
    available = tuple(check_modality(m, "available modality") for m in available)
    if not available:
        raise UserError(f"no available modality to synthesise {target} from; expected >= 1")
    if target in available:
        raise UserError(
            f"{target} is both the target and available: a model synthesises a modality "
            "the case lacks, from the others"
        )
    return tuple(m for m in MODALITIES if m in available)


def availability_mask(available):
    """float32 (4,): 1 for each available modality, MODALITIES order."""
    return np.array([1.0 if m in available else 0.0 for m in MODALITIES], np.float32)


def condition_code(available, target):
    """The multi-source condition: availability mask (4) then target one-hot (4).

    >>> condition_code(("t1", "t2"), "flair").tolist()
    [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    """
    available = check_condition(available, target)
    onehot = np.array([1.0 if m == target else 0.0 for m in MODALITIES], np.float32)
    return np.concatenate([availability_mask(available), onehot])


def available_sets(target):
    """The 7 non-empty sets of the other three modalities: singles, pairs, the triple."""
    others = [m for m in MODALITIES if m != target]
    return [c for n in (1, 2, 3) for c in itertools.combinations(others, n)]


def condition_size(inputs):
    return NUM_TASKS if inputs == "single" else CONDITION_SIZE


def image_channels(inputs, context=0):
    """The image channels of a model of `inputs` reading `context` neighbours a side."""
    return (1 if inputs == "single" else len(MODALITIES)) * (2 * context + 1)


def inputs_of(condition_size):
    """The kind of model ("single" or "multi") whose condition has this many values."""
    return "single" if condition_size == NUM_TASKS else "multi"


def context_of(inputs, channels):
    """The context K of a model of `inputs` whose image has `channels` channels (its
    input shape carries it); ValueError for a count that no K gives.

    >>> context_of("single", 3), context_of("multi", 4)
    (1, 0)
    """
    per = image_channels(inputs)
    if channels < per or channels % per or (channels // per) % 2 == 0:
        raise ValueError(
            f"A {inputs}-source image has {per} x (2K + 1) channels. Received: channels={channels}"
        )
    return (channels // per - 1) // 2


def context_channels(modalities, context, stored=None):
    """Channel indices, into a modality-major image of `stored` context (default:
    `context`), of the 2 * context + 1 planes around the slice of each of `modalities`
    (indices into MODALITIES): how a model of smaller context reads a larger one's
    image, and one modality's planes are cut out of the four's.

    >>> context_channels([0, 3], 0, 1)  # the slices themselves of flair and t2
    [1, 10]
    """
    stored = context if stored is None else stored
    if not 0 <= context <= stored:
        raise ValueError(f"context must be in [0, {stored}]. Received: context={context}")
    per = 2 * stored + 1
    return [m * per + stored + o for m in modalities for o in range(-context, context + 1)]


def row_code(row, inputs):
    """The condition vector of `row` for a model of kind `inputs`."""
    if inputs == "single":
        (source,) = row.available
        return task_code(source, row.target)
    return condition_code(row.available, row.target)


def row_table(inputs, source, targets):
    """Every row a run of this kind trains, in the order its slices cycle through.

    single + a modality: its targets (the paper's rows, one per target);
    single + "any": grouped by source, so consecutive 3 rows share one slice's source;
    multi: the 7 available sets of each target, interleaved so that consecutive rows
    have different targets.
    """
    targets = tuple(targets)
    if inputs == "single" and source != SOURCE_ANY:
        return [Row(row_key((source,), t), (source,), t) for t in targets]
    if inputs == "single":
        return [Row(row_key((s,), t), (s,), t) for s in MODALITIES for t in targets if t != s]
    per_target = {t: available_sets(t) for t in targets}
    return [
        Row(row_key(sets[i], t), sets[i], t) for i in range(7) for t, sets in per_target.items()
    ]


def training_cycle(inputs, source, targets, weights=()):
    """The rows training slices cycle through: `row_table`, except that with `weights`
    (one positive integer per target, multi-source only) target t's 7 available sets
    come weights[t] times each per cycle, interleaved with the other targets' rows.

    >>> [r.key for r in training_cycle("multi", "any", ("flair", "t1"), (2, 1))][:3]
    ['t1->flair', 't1ce->flair', 'flair->t1']
    """
    if not weights or set(weights) == {1}:
        return row_table(inputs, source, targets)
    if inputs != "multi" or len(weights) != len(targets):
        raise ValueError(
            f"weights: one per target of a multi-source table. Received: inputs={inputs!r}, "
            f"targets={tuple(targets)}, weights={tuple(weights)}"
        )
    per_target = {t: available_sets(t) * w for t, w in zip(targets, weights)}
    cycle = []
    for i in range(7):  # round i: each target's next `weight` rows
        for t, w in zip(targets, weights):
            cycle += [Row(row_key(s, t), s, t) for s in per_target[t][i * w : (i + 1) * w]]
    return cycle


def trained_rows(config):
    """The row keys a run of `config` (a RunConfig) was trained for, in table order."""
    table = row_table(config.model.inputs, config.train.source, config.train.targets)
    return tuple(r.key for r in table)


def display_order(keys):
    """Row keys grouped by target (MODALITIES order), then by how many sources, so a
    table reads one target's single sources, pairs and triple together."""

    def rank(key):
        available, target = parse_row_key(key)
        return (
            MODALITIES.index(target),
            len(available),
            [MODALITIES.index(a) for a in available],
        )

    return sorted(keys, key=rank)


def rows_per_slice(inputs, source, table_size):
    """Rows a training slice expands into: all of them in the paper's mode, else 3 (so a
    step sees as many images as the paper's), cycling through the table."""
    if inputs == "single" and source != SOURCE_ANY:
        return table_size
    return min(ROWS_PER_SLICE, table_size)


def source_preview(image, task):
    """One channel of `image` (B, H, W, C) to draw as "the source": the slice itself
    (not its neighbours) of the source for single inputs, else of each row's first
    available modality (read from the condition)."""
    image, task = np.asarray(image), np.asarray(task)
    inputs = inputs_of(task.shape[-1])
    context = context_of(inputs, image.shape[-1])
    if inputs == "single":
        return image[..., context_channels([0], 0, context)]
    first = np.argmax(task[:, : len(MODALITIES)] > 0, axis=1)
    return np.stack([image[i][..., context_channels([c], 0, context)] for i, c in enumerate(first)])
