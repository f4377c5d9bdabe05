import numpy as np
import pytest

from dygan_tf.config import tasks


def test_codes_are_the_papers_table_1():
    # Leftmost printed character is element 0.
    assert tasks.task_code("flair", "t1")[11] == 1.0
    assert tasks.task_code("t2", "t1ce")[0] == 1.0
    assert tasks.task_code("t2", "flair")[2] == 1.0
    codes = np.stack([tasks.task_code(s, t) for s, t in tasks.TASKS])
    assert codes.shape == (12, 12) and codes.dtype == np.float32
    np.testing.assert_array_equal(codes.sum(axis=0), np.ones(12))
    np.testing.assert_array_equal(codes.sum(axis=1), np.ones(12))
    for (s, t), printed in tasks.TASK_CODES.items():
        assert "".join(str(int(v)) for v in tasks.task_code(s, t)) == printed
        assert tasks.task_from_index(tasks.task_index(s, t)) == (s, t)


def test_targets_for():
    assert tasks.targets_for("t2") == ("flair", "t1", "t1ce")
    assert tasks.targets_for("flair") == ("t1", "t1ce", "t2")


@pytest.mark.parametrize("source,target", [("t2", "t2"), ("pd", "t1"), ("t1", "T3"), ("t2w", "T2")])
def test_bad_tasks_name_what_was_received(source, target):
    with pytest.raises(ValueError, match="t2|pd|T3"):
        tasks.task_code(source, target)


def test_every_spelling_names_the_same_task():
    # "T2" was refused before BraTS 2023's names (t2w, t2f, t1n, t1c) and any case came in.
    code = tasks.task_code("t1", "t2")
    for source, target in [("t1", "T2"), ("T1N", "t2w"), ("t1n", "T2")]:
        assert np.array_equal(tasks.task_code(source, target), code)
