"""Session fixtures for export and translation: a tiny training run folder and its
SavedModel, made once per session.

Import them into a test module with `from tests.model_fixtures import *`.
"""

import os

import pytest

__all__ = ["run_dir", "savedmodel_dir", "tiny_generator"]

_BUILT = {}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A folder as `fit` leaves it: config.json and generator.keras (tiny, random weights)."""
    if "run" not in _BUILT:
        import keras

        from dygan_tf.builders import build_networks
        from dygan_tf.config import get_preset

        keras.utils.set_random_seed(0)
        config = get_preset("tiny")
        generator, _ = build_networks(config.model)
        folder = tmp_path_factory.mktemp("run")
        generator.save(folder / "generator.keras")
        (folder / "config.json").write_text(config.to_json())
        _BUILT["run"] = folder
    return _BUILT["run"]


@pytest.fixture(scope="session")
def tiny_generator(run_dir):
    if "generator" not in _BUILT:
        from dygan_tf.export import load_run

        _BUILT["generator"] = load_run(str(run_dir))
    return _BUILT["generator"]


@pytest.fixture(scope="session")
def savedmodel_dir(tiny_generator, run_dir, tmp_path_factory):
    """`saved_models/dygan/1` exported in-process from `run_dir`."""
    if "savedmodel" not in _BUILT:
        from dygan_tf.export import build_metadata, export_generator

        config, generator = tiny_generator
        out = os.path.join(tmp_path_factory.mktemp("saved_models"), "dygan", "1")
        export_generator(generator, out, build_metadata(config, str(run_dir), generator))
        _BUILT["savedmodel"] = out
    return _BUILT["savedmodel"]
