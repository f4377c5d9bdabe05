"""Plain helpers shared by the tests (no fixtures here: those live in conftest.py)."""

import os
import subprocess
import sys

import numpy as np

from data_prep import make_phantom
from dygan_tf.tasks import task_code

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The session phantom and its shards (conftest.py builds them once).
PHANTOM_HGG, PHANTOM_LGG = 4, 2
IMAGE_SIZE = 64
TRAIN_HGG, TRAIN_LGG = 3, 1
BUILD_ARGS = dict(
    image_size=IMAGE_SIZE,
    train_hgg=TRAIN_HGG,
    train_lgg=TRAIN_LGG,
    shards_per_split=2,
    workers=2,
    verbose=False,
)

# TensorFlow's native start-up log lines, which bypass Python's stderr handling.
_NATIVE_LOG_PREFIXES = ("WARNING: All log messages before absl", "I0000", "W0000", "E0000")


def case_folder(root, index=0, grade="HGG"):
    """(folder, case id) of phantom case `index` under a BraTS-layout root."""
    cid = make_phantom.case_id(index)
    return os.path.join(root, make_phantom.TRAINING_FOLDER, grade, cid), cid


def run_cli(module, *args, timeout=300, cwd=REPO):
    """Runs `python -m module args`; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(result, code=2):
    """Asserts the command failed with exit `code` and exactly one `error:` line on
    stderr (ignoring TensorFlow's native log lines); returns that line."""
    lines = [
        line
        for line in result.stderr.strip().splitlines()
        if not line.startswith(_NATIVE_LOG_PREFIXES)
    ]
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]


def t2_task_batch(slices, size, seed=0):
    """`slices` random source slices, each expanded into the 3 T2 tasks (as the data
    pipeline does): (image, target, task) numpy arrays."""
    rng = np.random.RandomState(seed)
    image = np.repeat(rng.uniform(-1, 1, (slices, size, size, 1)), 3, axis=0).astype("float32")
    target = rng.uniform(-1, 1, (3 * slices, size, size, 1)).astype("float32")
    task = np.tile(np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")]), (slices, 1))
    return image, target, task
