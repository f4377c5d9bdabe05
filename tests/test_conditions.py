"""The conditions of `--source any` and `--inputs multi`: the 8-value code and its
validation, the row tables, and what the data pipeline feeds (balance, no leakage of
the target's own image)."""

import collections

import numpy as np
import pytest

from dygan_tf.config import conditions
from dygan_tf.config import flags as run_flags
from dygan_tf.config.run_config import RunConfig, TrainConfig, get_preset
from dygan_tf.config.tasks import MODALITIES, task_code
from dygan_tf.data import DatasetSpec
from dygan_tf.data.pipeline import make_dataset
from dygan_tf.utils.cli import ArgumentParser
from dygan_tf.utils.errors import UserError


def test_condition_code_is_availability_then_target_one_hot():
    code = conditions.condition_code(("t2", "t1"), "flair")
    # MODALITIES order: flair, t1, t1ce, t2.
    np.testing.assert_array_equal(code, [0, 1, 0, 1, 1, 0, 0, 0])
    assert code.dtype == np.float32 and code.shape == (conditions.CONDITION_SIZE,)
    all_three = conditions.condition_code(("flair", "t1", "t1ce"), "t2")
    np.testing.assert_array_equal(all_three, [1, 1, 1, 0, 0, 0, 0, 1])


@pytest.mark.parametrize(
    "available, target, needle",
    [
        ((), "flair", "no available modality to synthesise flair from"),
        (("flair", "t1"), "flair", "flair is both the target and available"),
        (("t1", "pd"), "flair", "Unknown available modality 'pd'"),
        (("t1",), "dwi", "Unknown target modality 'dwi'"),
    ],
)
def test_bad_condition_is_one_clear_error(available, target, needle):
    with pytest.raises(UserError, match=needle):
        conditions.condition_code(available, target)


def test_row_tables_of_the_three_kinds():
    paper = conditions.row_table("single", "t2", ("flair", "t1", "t1ce"))
    assert [r.key for r in paper] == ["t2->flair", "t2->t1", "t2->t1ce"]
    any_source = conditions.row_table("single", "any", MODALITIES)
    assert len(any_source) == 12 == len({r.key for r in any_source})
    # Grouped by source: rows 3k..3k+2 share one source (one slice's three targets).
    assert [r.available for r in any_source[:3]] == [("flair",)] * 3
    multi = conditions.row_table("multi", "any", MODALITIES)
    assert len(multi) == 28 == len({r.key for r in multi})
    for row in multi:
        assert row.target not in row.available and 1 <= len(row.available) <= 3
    per_target = collections.Counter(r.target for r in multi)
    assert per_target == {m: 7 for m in MODALITIES}
    # Interleaved: neighbouring rows ask for different targets.
    assert all(a.target != b.target for a, b in zip(multi, multi[1:]))
    for row in multi:
        assert conditions.parse_row_key(row.key) == (row.available, row.target)
    with pytest.raises(ValueError, match="Not a row key"):
        conditions.parse_row_key("t2-flair")


def test_display_order_groups_by_target_then_source_count():
    keys = [r.key for r in conditions.row_table("multi", "any", ("flair",))]
    assert conditions.display_order(keys) == [
        "t1->flair",
        "t1ce->flair",
        "t2->flair",
        "t1+t1ce->flair",
        "t1+t2->flair",
        "t1ce+t2->flair",
        "t1+t1ce+t2->flair",
    ]


def _flags(*argv):
    parser = ArgumentParser(prog="test")
    run_flags.add_config_flags(parser)
    return run_flags.config_from_flags(parser.parse_args(list(argv)), "tiny")


def test_flags_any_and_multi():
    any_cfg = _flags("--source", "any")
    assert any_cfg.train.source == "any" and any_cfg.train.targets == MODALITIES
    assert any_cfg.model.inputs == "single"
    multi = _flags("--inputs", "multi")
    assert multi.model.inputs == "multi" and multi.train.source == "any"
    assert multi.train.targets == MODALITIES
    flair_only = _flags("--inputs", "multi", "--targets", "flair")
    assert flair_only.train.targets == ("flair",)
    assert _flags().model.inputs == "single" and _flags().train.source == "t2"  # paper
    with pytest.raises(UserError, match="needs source='any'"):
        _flags("--inputs", "multi", "--source", "t2")
    with pytest.raises(UserError, match="Unknown source modality 'pd'"):
        _flags("--source", "pd")
    # An older config.json (no `inputs`) reads as the paper's single-source model.
    data = get_preset("tiny").to_dict()
    del data["model"]["inputs"]
    assert RunConfig.from_dict(data).model.inputs == "single"
    with pytest.raises(ValueError, match="targets must be a non-empty subset"):
        TrainConfig(source="any", targets=())


def _rows(ds, limit=None):
    """(keys, image, target, task, available) of every row of a meta dataset."""
    keys, images, targets, tasks, masks = [], [], [], [], []
    for n, (image, target, task, meta) in enumerate(ds):
        if limit is not None and n >= limit:
            break
        keys += [k.decode() for k in meta["row"].numpy()]
        images.append(image.numpy())
        targets.append(target.numpy())
        tasks.append(task.numpy())
        masks.append(meta["available"].numpy())
    cat = np.concatenate
    return keys, cat(images), cat(targets), cat(tasks), cat(masks)


def test_multi_rows_never_show_the_target_and_keep_the_available(tfrecord_dir):
    """Every row of every slice of the test split: the target's channel is the fill
    value (its own image never reaches the generator), every available channel is the
    stored image, and the condition says which is which."""
    single = make_dataset(
        str(tfrecord_dir), "test", source="any", targets=MODALITIES, return_meta=True
    )
    # One row per (source, target): the stored images, keyed by slice and modality.
    stored = {}
    for image, target, _, meta in single:
        for i, key in enumerate(k.decode() for k in meta["row"].numpy()):
            (source,), name = conditions.parse_row_key(key)
            stored[(int(meta["slice_index"][i]), meta["case_id"][i].numpy(), source)] = image[i]
            stored[(int(meta["slice_index"][i]), meta["case_id"][i].numpy(), name)] = target[i]
    multi = make_dataset(
        str(tfrecord_dir),
        "test",
        source="any",
        targets=MODALITIES,
        inputs="multi",
        return_meta=True,
    )
    seen = 0
    for image, target, task, meta in multi:
        image, target, task = image.numpy(), target.numpy(), task.numpy()
        assert image.shape[-1] == 4 and task.shape[-1] == 8
        for i, key in enumerate(k.decode() for k in meta["row"].numpy()):
            available, name = conditions.parse_row_key(key)
            where = (int(meta["slice_index"][i]), meta["case_id"][i].numpy())
            np.testing.assert_array_equal(task[i], conditions.condition_code(available, name))
            np.testing.assert_array_equal(target[i], stored[(*where, name)])
            for c, m in enumerate(MODALITIES):
                if m in available:
                    np.testing.assert_array_equal(image[i, ..., c], stored[(*where, m)][..., 0])
                else:
                    assert np.all(image[i, ..., c] == conditions.FILL_VALUE), (key, m)
                # The target's image is in no input channel.
                assert not np.array_equal(image[i, ..., c], target[i, ..., 0]), (key, m)
            seen += 1
    assert seen == 28 * len(stored) // 4


def test_dataset_spec_checks_its_options_when_made(tfrecord_dir):
    """make_dataset's options are one frozen DatasetSpec, checked before any file is
    read; make_dataset takes it or its fields as keywords, not both, and no option
    positionally."""
    with pytest.raises(UserError, match="Unknown source modality 'pd'"):
        DatasetSpec(source="pd")
    with pytest.raises(UserError, match="Unknown target modality 'pd'"):
        make_dataset("no/such/folder", "test", targets=("flair", "pd"))
    with pytest.raises(ValueError, match="inputs must be one of"):
        DatasetSpec(inputs="dual")
    pair = next(r for r in conditions.row_table("multi", "any", MODALITIES) if len(r.available) > 1)
    with pytest.raises(ValueError, match="A single-source row has one source"):
        DatasetSpec(rows=[pair])
    assert DatasetSpec(rows=[pair], inputs="multi").table == [pair]
    with pytest.raises(ValueError, match="No rows for source='any'"):
        DatasetSpec(source="any", targets=())
    with pytest.raises(ValueError, match="batch_slices must be >= 1"):
        DatasetSpec(batch_slices=0)
    with pytest.raises(ValueError, match=r"worker_index must be in \[0, num_workers\)"):
        DatasetSpec(num_workers=2, worker_index=2)
    spec = DatasetSpec(targets=["flair"], case_ids=["a"], rows=None)
    assert spec.targets == ("flair",) and spec.case_ids == ("a",)
    with pytest.raises(AttributeError):
        spec.seed = 1  # frozen
    with pytest.raises(TypeError, match="not both"):
        make_dataset(str(tfrecord_dir), "test", spec, seed=1)
    with pytest.raises(TypeError, match="as a DatasetSpec or as keywords"):
        make_dataset(str(tfrecord_dir), "test", "any")
    with pytest.raises(TypeError, match="batch_size"):
        make_dataset(str(tfrecord_dir), "test", batch_size=2)


def test_multi_training_draws_every_target_and_set_equally(tfrecord_dir):
    """3 rows a slice cycle through the 28 (target, available set) rows: over 28
    shuffled slices each row comes exactly 3 times."""
    spec = DatasetSpec(
        source="any",
        targets=MODALITIES,
        inputs="multi",
        every_row=False,
        shuffle=True,
        repeat=True,
        seed=3,
        batch_slices=4,
        return_meta=True,
    )
    ds = make_dataset(str(tfrecord_dir), "train", spec)
    keys, image, target, task, mask = _rows(ds, limit=7)
    assert len(keys) == 84
    counts = collections.Counter(keys)
    assert set(counts) == {r.key for r in conditions.row_table("multi", "any", MODALITIES)}
    assert set(counts.values()) == {3}
    for i, key in enumerate(keys):
        available, name = conditions.parse_row_key(key)
        np.testing.assert_array_equal(mask[i], conditions.availability_mask(available))
        assert task[i, 4 + MODALITIES.index(name)] == 1


def test_any_source_training_trains_the_12_tasks_equally(tfrecord_dir):
    """Each slice takes one source and its three targets; over 4k slices every task
    comes exactly k times, and the cycle runs on across epochs (training_dataset)."""
    from dygan_tf.training import run as training_run

    config = get_preset("tiny").override(source="any", targets=MODALITIES, epochs=4)
    validation = training_run.choose_validation_cases(str(tfrecord_dir), 0)
    ds = training_run.training_dataset(str(tfrecord_dir), config, validation, 1, steps_per_epoch=3)
    tasks = {tuple(task_code(s, t)): (s, t) for s in MODALITIES for t in MODALITIES if s != t}
    counts = collections.Counter()
    batches = 0
    for image, _, task in ds:
        image, task = image.numpy(), task.numpy()
        assert image.shape[0] == 3 and image.shape[-1] == 1
        pairs = [tasks[tuple(code)] for code in task]
        assert len({s for s, _ in pairs}) == 1 and len({t for _, t in pairs}) == 3
        # One slice: the source image repeated on its three rows.
        np.testing.assert_array_equal(image[0], image[1])
        np.testing.assert_array_equal(image[0], image[2])
        counts.update(pairs)
        batches += 1
    assert batches == 12  # 4 epochs x 3 steps
    assert len(counts) == 12 and set(counts.values()) == {3}


def test_source_preview_picks_the_first_available_channel():
    image = np.stack([np.full((2, 2), v, np.float32) for v in (1, 2, 3, 4)], -1)[None]
    image = np.repeat(image, 2, axis=0)
    task = np.stack(
        [
            conditions.condition_code(("t1ce", "t2"), "flair"),
            conditions.condition_code(("t1",), "t2"),
        ]
    )
    shown = conditions.source_preview(image, task)
    assert shown.shape == (2, 2, 2, 1)
    assert shown[0, 0, 0, 0] == 3 and shown[1, 0, 0, 0] == 2


def test_target_weights_repeat_each_targets_sets_in_the_cycle():
    """flair x2: a cycle of 35 rows where each FLAIR row comes twice and every other row
    once; weights of 1 give the uniform table itself."""
    cycle = conditions.training_cycle("multi", "any", MODALITIES, (2, 1, 1, 1))
    counts = collections.Counter(r.key for r in cycle)
    table = conditions.row_table("multi", "any", MODALITIES)
    assert len(cycle) == 35 and set(counts) == {r.key for r in table}
    assert all(counts[r.key] == (2 if r.target == "flair" else 1) for r in table)
    # Interleaved: every window of 5 consecutive rows holds all four targets.
    for start in range(0, 35, 5):
        assert {r.target for r in cycle[start : start + 5]} == set(MODALITIES)
    assert conditions.training_cycle("multi", "any", MODALITIES, (1, 1, 1, 1)) == table
    assert conditions.training_cycle("multi", "any", MODALITIES) == table
    three = conditions.training_cycle("multi", "any", ("flair", "t2"), (3, 2))
    assert collections.Counter(r.target for r in three) == {"flair": 21, "t2": 14}
    with pytest.raises(ValueError, match="one per target of a multi-source table"):
        conditions.training_cycle("single", "any", MODALITIES, (2, 1, 1, 1))
    with pytest.raises(ValueError, match="one per target of a multi-source table"):
        conditions.training_cycle("multi", "any", MODALITIES, (2, 1))


def test_target_weights_flag_and_config():
    weighted = _flags("--inputs", "multi", "--target-weights", "flair=2")
    assert weighted.train.target_weights == (2, 1, 1, 1)
    named = _flags("--inputs", "multi", "--targets", "t2,flair", "--target-weights", "t2=3")
    assert named.train.targets == ("t2", "flair") and named.train.target_weights == (3, 1)
    assert RunConfig.from_dict(weighted.to_dict()) == weighted
    # A config.json written before the field existed reads as uniform.
    data = weighted.to_dict()
    del data["train"]["target_weights"]
    assert RunConfig.from_dict(data).train.target_weights == ()
    for argv, needle in [
        (("--target-weights", "flair=0"), "flair's weight must be in 1..10, found 0"),
        (("--target-weights", "flair=11"), "flair's weight must be in 1..10, found 11"),
        (("--target-weights", "flair=2.5"), "flair's weight is not an integer: '2.5'"),
        (("--target-weights", "pd=2"), "expected target=weight for distinct targets"),
        (("--target-weights", "flair"), "found 'flair'"),
        (("--target-weights", "flair=2,flair=3"), "found 'flair=3'"),
        (("--targets", "t1", "--target-weights", "flair=2"), "found 'flair=2'"),
    ]:
        with pytest.raises(UserError, match=needle):
            _flags("--inputs", "multi", *argv)
    with pytest.raises(UserError, match="target_weights weigh the targets of a multi-source"):
        _flags("--source", "any", "--target-weights", "flair=2")
    with pytest.raises(ValueError, match="one integer in 1..10 per target"):
        TrainConfig(source="any", targets=MODALITIES, target_weights=(2, 1))
    with pytest.raises(ValueError, match="one integer in 1..10 per target"):
        TrainConfig(source="any", targets=MODALITIES, target_weights=(2.0, 1, 1, 1))


def test_weighted_multi_training_draws_flair_twice_as_often(tfrecord_dir):
    """training_dataset of a flair x2 run: over 35 slices (5 epochs of 7 steps, i.e.
    3 whole cycles of 35 rows) every FLAIR row comes twice as often as every other row,
    so the cycle runs on across epochs."""
    from dygan_tf.training import run as training_run

    config = get_preset("tiny").override(
        inputs="multi", source="any", targets=MODALITIES, target_weights=(2, 1, 1, 1), epochs=5
    )
    validation = training_run.choose_validation_cases(str(tfrecord_dir), 0)
    ds = training_run.training_dataset(str(tfrecord_dir), config, validation, 1, steps_per_epoch=7)
    counts = collections.Counter()
    for image, _, task in ds:  # 5 epochs x 7 steps = 35 slices = 105 rows = 3 cycles
        assert image.shape[0] == 3 and image.shape[-1] == 4
        for code in task.numpy():
            available = tuple(m for m, bit in zip(MODALITIES, code[:4]) if bit)
            counts[conditions.row_key(available, MODALITIES[int(np.argmax(code[4:]))])] += 1
    assert sum(counts.values()) == 105 and len(counts) == 28
    for key, n in counts.items():
        assert n == (6 if key.endswith("->flair") else 3), (key, n)
