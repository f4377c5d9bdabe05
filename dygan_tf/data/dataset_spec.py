"""What `make_dataset` reads and how: one frozen `DatasetSpec` of its options, checked
when made (pure Python: no TensorFlow until a dataset is built).

    from dygan_tf.data import DatasetSpec
"""

import dataclasses

from dygan_tf.config import conditions
from dygan_tf.config.tasks import PAPER_TARGETS, check_modality


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The options of `dygan_tf.data.pipeline.make_dataset`, checked when made.

    Attributes:
        source: the source modality, or "any" (every modality in turn; with
            `inputs="multi"` every non-empty set of the others).
        targets: the target modalities.
        batch_slices: slices per batch.
        shuffle: False, True (a buffer of 256 slices) or a buffer size; it also
            shuffles the shard order.
        repeat: repeat forever.
        seed: the shuffle seed.
        num_workers, worker_index: worker i of n reads shards i::n (multi-worker).
        return_meta: add a 4th element, a dict of per-row `case_id`, `grade`,
            `slice_index`, `seg` and `brain_mask` ((B, H, W, 1) uint8), `target`,
            `row` (`conditions.row_key`) and `available` ((B, 4) mask).
        drop_remainder: drop a last smaller batch.
        inputs: "single" (1-channel source, 12-bit task code) or "multi" (4 channels,
            missing ones filled, 8-bit condition).
        every_row: each slice gives every row of the table (evaluation, and the
            paper's training); False: 3 rows a slice, cycling through the table so
            that every row is drawn equally often (training with "any" or "multi").
        slice_offset: where in that cycle the first slice starts (training passes
            the slices of the epochs before, so the cycle runs on across epochs).
        case_ids, keep_cases: only the slices of `case_ids` (`keep_cases=True`), or
            all but them; None: every slice.
        rows: an explicit row table (`conditions.Row`s) instead of the one of
            `inputs`, `source` and `targets` (evaluation scores several kinds of model
            on the rows of one).
        per_case: read only this many slices of each case (all of a case that holds
            fewer), drawn with `seed` (`dygan_tf.data.epoch_draw.draw`): training's
            epoch on shards of every brain slice. None: every slice.
        context: K axial neighbours a side fed with each slice (2.5-D): each
            modality gives 2K + 1 channels (`dygan_tf.config.conditions`); the
            shards must have been built with at least K (`--context`).

    `targets`, `case_ids` and `rows` are kept as tuples. ValueError for a modality,
    `inputs`, row, `batch_slices`, `per_case` or `worker_index` that cannot be read.

    Example:

    >>> spec = DatasetSpec(source="any", inputs="multi", every_row=False)
    >>> len(spec.table)  # 3 targets x 7 sets of the other modalities
    21
    >>> DatasetSpec(batch_slices=0)
    Traceback (most recent call last):
    ValueError: batch_slices must be >= 1. Received: batch_slices=0
    """

    source: str = "t2"
    targets: tuple = PAPER_TARGETS
    batch_slices: int = 1
    shuffle: bool | int = False
    repeat: bool = False
    seed: int | None = None
    num_workers: int = 1
    worker_index: int = 0
    return_meta: bool = False
    drop_remainder: bool = False
    inputs: str = "single"
    every_row: bool = True
    slice_offset: int = 0
    case_ids: tuple | None = None
    keep_cases: bool = True
    rows: tuple | None = None
    per_case: int | None = None
    context: int = 0

    def __post_init__(self):
        for name in ("targets", "case_ids", "rows"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.source != conditions.SOURCE_ANY:
            check_modality(self.source, "source modality")
        if self.inputs not in conditions.INPUTS:
            raise ValueError(
                f"inputs must be one of {conditions.INPUTS}. Received: inputs={self.inputs!r}"
            )
        for t in self.targets:
            check_modality(t, "target modality")
        table = self.table
        if not table:
            raise ValueError(f"No rows for source={self.source!r}, targets={self.targets}")
        for row in table:  # validates every row
            conditions.check_condition(row.available, row.target)
            if self.inputs == "single" and len(row.available) != 1:
                raise ValueError(f"A single-source row has one source. Received: {row}")
        if self.batch_slices < 1:
            raise ValueError(
                f"batch_slices must be >= 1. Received: batch_slices={self.batch_slices}"
            )
        if self.per_case is not None and (self.per_case < 1 or self.seed is None):
            raise ValueError(
                f"per_case must be >= 1 and drawn with a seed. Received: "
                f"per_case={self.per_case}, seed={self.seed}"
            )
        if type(self.context) is not int or self.context < 0:
            raise ValueError(f"context must be an int >= 0. Received: context={self.context!r}")
        if not 0 <= self.worker_index < self.num_workers:
            raise ValueError(
                f"worker_index must be in [0, num_workers). Received: "
                f"worker_index={self.worker_index}, num_workers={self.num_workers}"
            )

    @property
    def table(self):
        """The rows each slice is expanded into: `rows`, else the row table of
        `inputs`, `source` and `targets` (`conditions.row_table`)."""
        if self.rows is not None:
            return list(self.rows)
        return conditions.row_table(self.inputs, self.source, self.targets)
