"""dygan_tf.training.method_choice: every auto DyConv2D of the tiny DyGAN gets a valid
method and a documented source, the variables are as before, and the train step with the
chosen methods equals the shipped table's on the same weights and batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.config.run_config import get_preset
from dygan_tf.layers.dyconv_methods import METHODS
from dygan_tf.models.builders import build_dygan
from dygan_tf.training import method_choice
from dygan_tf.utils import method_cache

BATCH = 3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(method_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "1")  # off by default for DyConv
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "600")
    monkeypatch.setattr(method_cache, "REPEATS", 1)
    monkeypatch.setattr(method_choice, "STEPS_PER_CALL", 1)
    method_cache.set_measuring(None)
    method_cache.reset_spent()
    return tmp_path / "cache"


@pytest.fixture
def gan():
    keras.utils.set_random_seed(0)
    return build_dygan(get_preset("tiny"))


def values(gan):
    return [v.numpy() for v in (*gan.generator.variables, *gan.discriminator.variables)]


def one_step(gan, saved, batch):
    """Losses and variables after one train step from `saved` on `batch`, through a
    freshly traced train function (as fit traces it)."""
    method_choice._restore(saved)
    gan.make_train_function(force=True)
    logs = gan.train_function(iter(tf.data.Dataset.from_tensors(batch).repeat()))
    return {k: float(v) for k, v in logs.items()}, values(gan)


def the_batch(gan):
    return next(iter(method_choice._step_data(gan, BATCH)))


@pytest.mark.slow
def test_measured_choices_are_valid_and_the_step_is_unchanged(cache, gan, capsys):
    layers = method_choice.auto_layers(gan, BATCH)
    assert len(layers) == 13  # 14 DyConv2D, the 2x2 head on the dense_map rule
    assert {shape[0] for name, _, shape, _ in layers if name.startswith("discriminator")} == {6}
    before = values(gan)
    result = method_choice.choose_methods(gan, BATCH)
    assert gan.train_function is None
    for a, b in zip(before, values(gan)):
        np.testing.assert_array_equal(a, b)
    assert set(result["layers"]) == {name for name, *_ in layers}
    for name, layer, _, table in layers:
        method, source = layer.measured_choice
        assert result["layers"][name] == (method, source)
        assert method in METHODS and method != "dense_map"
        assert source in (method_cache.MEASURED, method_cache.CACHED, method_choice.TABLE_IN_STEP)
        if source == method_choice.TABLE_IN_STEP:
            assert method == table
    assert result["step"][0] in ("measured", "table")
    assert "DyConv methods: " in capsys.readouterr().out

    # Read back: nothing measured again.
    spent = method_cache.spent_seconds()
    again = method_choice.choose_methods(gan, BATCH)
    assert method_cache.spent_seconds() == spent
    assert {n: m for n, (m, _) in again["layers"].items()} == {
        n: m for n, (m, _) in result["layers"].items()
    }
    assert {s for _, s in again["layers"].values()} <= {"cache", method_choice.TABLE_IN_STEP}


@pytest.mark.slow
def test_the_step_with_other_methods_equals_the_tables(cache, gan):
    """Cached choices unlike the table's (seeded through `method_cache.choose` with
    candidates that make them the fastest) are read back and traced into the step."""
    layers = method_choice.auto_layers(gan, BATCH)
    wanted = seed_layers(layers)
    measured = {name: (m, "measured") for name, m in wanted.items()}
    key = method_choice.step_key(gan, BATCH, layers, measured)
    seeds = {"measured": lambda: None, "table": _sleep}
    assert method_cache.choose(method_choice.STEP_FAMILY, key, seeds, "table")[0] == "measured"

    # Plain SGD at rate 1: a step's change of each weight is its gradient (Adam's first
    # step is about the gradient's sign, which rounding flips where it is ~0).
    gan.compile(g_optimizer=keras.optimizers.SGD(1.0), d_optimizer=keras.optimizers.SGD(1.0))
    saved, batch = method_choice._snapshot(gan), the_batch(gan)
    start = values(gan)
    reference_logs, reference = one_step(gan, saved, batch)
    spent = method_cache.spent_seconds()
    result = method_choice.choose_methods(gan, BATCH)
    assert method_cache.spent_seconds() == spent
    assert result["step"] == ("measured", "cache")
    assert result["layers"] == {name: (m, "cache") for name, m in wanted.items()}
    for name, layer, shape, _ in layers:
        assert layer.conv_method_choice(shape) == (wanted[name], "cache")
    logs, after = one_step(gan, saved, batch)
    assert logs == pytest.approx(reference_logs, rel=1e-5)
    # Gradients that instance norm makes ~0 (a bias, the routing's scale) are sums that
    # cancel: their rounding is that of the network's larger gradients.
    scale = max(float(np.abs(a - w0).max()) for w0, a in zip(start, reference))
    for w0, a, b in zip(start, reference, after):
        np.testing.assert_allclose(b - w0, a - w0, rtol=1e-3, atol=1e-4 * scale)


def seed_layers(layers):
    """Caches for every layer a method unlike the table's as the fastest; returns them."""
    wanted = {}
    for name, layer, shape, table in layers:
        names = list(method_choice.layer_candidates(layer, shape))
        wanted[name] = next(m for m in ("stacked_outputs", "patches", "loop") if m != table)
        seeds = {m: (lambda: None) if m == wanted[name] else _sleep for m in names}
        key = method_choice.layer_key(layer, shape)
        # D's two 8x8x64 layers share one shape: the second reads the first's entry.
        assert method_cache.choose(method_choice.LAYER_FAMILY, key, seeds, table) in (
            (wanted[name], "measured"),
            (wanted[name], "cache"),
        )
    return wanted


def test_the_step_is_validated_only_with_most_of_the_budget_left(cache, gan, monkeypatch):
    layers = method_choice.auto_layers(gan, BATCH)
    seed_layers(layers)
    monkeypatch.setattr(method_choice, "STEP_BUDGET_SHARE", 1.01)  # never enough left
    result = method_choice.choose_methods(gan, BATCH)
    assert result["step"] == ("table", method_cache.SPENT)
    assert result["layers"] == {name: (t, method_cache.SPENT) for name, _, _, t in layers}


def _sleep():
    import time

    time.sleep(0.01)


@pytest.mark.parametrize(
    "setting, source",
    [
        ("default", method_cache.OFF),
        ("off", method_cache.OFF),
        ("flag off", method_cache.OFF),
        ("budget", method_cache.SPENT),
    ],
)
def test_off_or_out_of_budget_the_table_runs(cache, gan, monkeypatch, setting, source):
    if setting == "default":
        monkeypatch.delenv(method_cache.MEASURE_VARIABLE)
    elif setting == "off":
        monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "0")
    elif setting == "flag off":
        monkeypatch.setattr(method_cache, "_state", dict(method_cache._state))  # undone after
        method_cache.set_measuring(False)
    else:
        monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "0")
    result = method_choice.choose_methods(gan, BATCH, log=lambda line: None)
    layers = method_choice.auto_layers(gan, BATCH)
    assert result["layers"] == {name: (table, source) for name, _, _, table in layers}
    assert result["step"] == ("table", source)
    assert not cache.exists()
