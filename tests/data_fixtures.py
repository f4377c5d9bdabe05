"""Session fixtures for the data tests: one small phantom and its shards, built once.

Import them into a test module with `from tests.data_fixtures import *`.
"""

import os
import subprocess
import sys

import pytest

from data_prep import build_tfrecords, make_phantom

PHANTOM_HGG, PHANTOM_LGG = 4, 2
IMAGE_SIZE = 64
TRAIN_HGG, TRAIN_LGG = 3, 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ["phantom_root", "tfrecord_dir", "run_cli", "case_folder", "REPO", "IMAGE_SIZE",
           "TRAIN_HGG", "TRAIN_LGG", "PHANTOM_HGG", "PHANTOM_LGG", "BUILD_ARGS"]

BUILD_ARGS = dict(image_size=IMAGE_SIZE, train_hgg=TRAIN_HGG, train_lgg=TRAIN_LGG,
                  shards_per_split=2, workers=2, verbose=False)


# Each test module that star-imports these fixtures gets its own copies, which pytest
# would set up once per module; this cache makes them once per session for real.
_BUILT = {}


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    if "phantom" not in _BUILT:
        root = tmp_path_factory.mktemp("phantom")
        make_phantom.build_phantom(str(root), PHANTOM_HGG, PHANTOM_LGG, seed=0,
                                   workers=2, verbose=False)
        _BUILT["phantom"] = root
    return _BUILT["phantom"]


@pytest.fixture(scope="session")
def tfrecord_dir(phantom_root, tmp_path_factory):
    if "records" not in _BUILT:
        out = tmp_path_factory.mktemp("records")
        build_tfrecords.build(str(phantom_root), str(out), **BUILD_ARGS)
        _BUILT["records"] = out
    return _BUILT["records"]


def case_folder(root, index=0, grade="HGG"):
    cid = make_phantom.case_id(index)
    return os.path.join(root, make_phantom.TRAINING_FOLDER, grade, cid), cid


def run_cli(module, *args, timeout=300):
    """Runs `python -m module args` from the repo; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)
