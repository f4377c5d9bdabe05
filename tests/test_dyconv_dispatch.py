"""dygan_tf.layers.dyconv_dispatch: the rule, the shipped table per backend and device,
and the per-machine measurement; a step with measured methods equals the table's."""

import keras
import numpy as np
import pytest

from dygan_tf.config.run_config import get_preset
from dygan_tf.config.tasks import task_code
from dygan_tf.layers import dyconv_dispatch
from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.dyconv_methods import METHODS
from dygan_tf.models.builders import build_dygan
from dygan_tf.utils import backend, method_cache

ROWS = 3


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(method_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "1")  # off by default on a TF CPU
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "600")
    monkeypatch.setattr(method_cache, "REPEATS", 1)
    method_cache.set_measuring(None)
    method_cache.reset_spent()
    return tmp_path / "cache"


def tiny_gan():
    keras.utils.set_random_seed(0)
    return build_dygan(get_preset("tiny"))


def auto_shapes(gan):
    """The (layer, shape) pairs that measure: "auto" and not on the dense_map rule."""
    return [
        (layer, shape)
        for layer, shape in gan.dyconv_input_shapes(ROWS)
        if dyconv_dispatch.choose(layer, shape)[1] != "dense_map rule"
    ]


def test_the_step_sees_every_dyconv_at_its_batch():
    gan = tiny_gan()
    shapes = gan.dyconv_input_shapes(ROWS)
    assert len(shapes) == 14
    in_d = {id(layer) for layer in gan.discriminator._flatten_layers()}
    assert {s[0] for layer, s in shapes if id(layer) in in_d} == {6}
    assert {s[0] for layer, s in shapes if id(layer) not in in_d} == {3}
    assert len([layer for layer, _ in shapes if id(layer) in in_d]) == 9
    assert len(auto_shapes(gan)) == 13  # the 2x2 head takes the dense_map rule


@pytest.mark.parametrize(
    "setting, source",
    [
        ("default", method_cache.OFF),
        ("off", method_cache.OFF),
        ("flag off", method_cache.OFF),
        ("budget", method_cache.SPENT),
    ],
)
def test_off_or_out_of_budget_the_table_runs(cache, monkeypatch, setting, source):
    if setting == "default":
        monkeypatch.delenv(method_cache.MEASURE_VARIABLE)
    elif setting == "off":
        monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "0")
    elif setting == "flag off":
        monkeypatch.setattr(method_cache, "_state", dict(method_cache._state))  # undone after
        method_cache.set_measuring(False)
    else:
        monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "0")
    gan = tiny_gan()
    result = dyconv_dispatch.measure(gan.dyconv_input_shapes(ROWS))
    expected = {
        layer.path: (dyconv_dispatch.shipped_method(layer, shape)[0], source)
        for layer, shape in auto_shapes(gan)
    }
    assert result == expected
    assert all(
        layer.conv_method_choice(shape) == expected[layer.path] for layer, shape in auto_shapes(gan)
    )
    assert not cache.exists()


def test_the_shipped_method_follows_the_backend_and_the_device(monkeypatch):
    layer = DyConv2D(8, 3)
    x = np.zeros((3, 16, 16, 16), "float32")
    layer(x, np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")]))
    key = (16 * 16, 16, 8, 3, 1)
    assert dyconv_dispatch.shipped_method(layer, x.shape)[0] == dyconv_dispatch.table_method(key)[0]
    assert not dyconv_dispatch.measuring_default()  # a TensorFlow CPU: the table stands
    with monkeypatch.context() as m:
        m.setattr(backend, "device_kind", lambda: "gpu")
        assert dyconv_dispatch.shipped_method(layer, x.shape) == (
            "grouped",
            "tensorflow default (gpu)",
        )
        assert dyconv_dispatch.measuring_default()
    for name in ("jax", "torch"):
        with monkeypatch.context() as m:
            m.setattr(backend, "name", lambda name=name: name)
            m.setattr(backend, "device_kind", lambda: "cpu")
            assert dyconv_dispatch.shipped_method(layer, x.shape) == (
                "loop",
                f"{name} default (cpu)",
            )
            assert dyconv_dispatch.measuring_default()
    assert layer.conv_method_choice(x.shape)[1] in ("table", "nearest table shape")


def test_large_intermediates_are_not_measured(monkeypatch):
    layer = DyConv2D(8, 3)
    layer(np.zeros((1, 16, 16, 16), "float32"), np.zeros((1, 12), "float32"))
    assert dyconv_dispatch.candidates_for(layer, (3, 16, 16, 16)) == tuple(
        m for m in METHODS if m != "dense_map"
    )
    monkeypatch.setattr(dyconv_dispatch, "MAX_INTERMEDIATE_MB", 0.01)  # ~10 kB
    assert dyconv_dispatch.candidates_for(layer, (3, 16, 16, 16)) == ("grouped", "loop")


@pytest.mark.slow
def test_measured_choices_are_valid_cached_and_leave_the_weights(cache):
    gan = tiny_gan()
    before = [v.numpy() for v in gan.variables]
    result = dyconv_dispatch.measure(gan.dyconv_input_shapes(ROWS))
    for a, b in zip(before, [v.numpy() for v in gan.variables]):
        np.testing.assert_array_equal(a, b)
    assert set(result) == {layer.path for layer, _ in auto_shapes(gan)}
    for layer, shape in auto_shapes(gan):
        method, source = layer.conv_method_choice(shape)
        assert result[layer.path] == (method, source)
        assert method in METHODS and method != "dense_map"
        assert source in (method_cache.MEASURED, method_cache.CACHED)
    # Read back: nothing measured again, the same choices.
    spent = method_cache.spent_seconds()
    again = dyconv_dispatch.measure(tiny_gan().dyconv_input_shapes(ROWS))
    assert method_cache.spent_seconds() == spent
    assert {n: m for n, (m, _) in again.items()} == {n: m for n, (m, _) in result.items()}
    assert {s for _, s in again.values()} == {method_cache.CACHED}


def _sleep():
    import time

    time.sleep(0.01)


def seed_cache(gan):
    """Caches for every measuring layer a method unlike the table's as the fastest."""
    wanted = {}
    for layer, shape in auto_shapes(gan):
        table = dyconv_dispatch.shipped_method(layer, shape)[0]
        wanted[layer.path] = next(m for m in ("stacked_outputs", "patches", "loop") if m != table)
        seeds = {
            m: (lambda: None) if m == wanted[layer.path] else _sleep
            for m in dyconv_dispatch.candidates_for(layer, shape)
        }
        key = dyconv_dispatch.cache_key(layer, shape)
        # D's two 8x8x64 layers share one shape: the second reads the first's entry.
        assert method_cache.choose(
            dyconv_dispatch.FAMILY, key, seeds, table, version=dyconv_dispatch.VERSION
        ) in ((wanted[layer.path], "measured"), (wanted[layer.path], "cache"))
    return wanted


def one_step(gan):
    """The losses and weights after one SGD step (rate 1: a weight's change is its
    gradient) on a fixed batch, through the compiled train function."""
    import tensorflow as tf

    gan.compile(g_optimizer=keras.optimizers.SGD(1.0), d_optimizer=keras.optimizers.SGD(1.0))
    size = get_preset("tiny").model.image_size
    rng = np.random.RandomState(0)
    image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), ROWS, 0).astype("float32")
    target = rng.uniform(-1, 1, (ROWS, size, size, 1)).astype("float32")
    task = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")]).astype("float32")
    gan.make_train_function(force=True)
    logs = gan.train_function(iter(tf.data.Dataset.from_tensors((image, target, task)).repeat()))
    return {k: float(v) for k, v in logs.items()}, [v.numpy() for v in gan.trainable_variables]


def test_the_step_with_cached_methods_equals_the_tables(cache, monkeypatch):
    table_gan = tiny_gan()
    start = [v.numpy() for v in table_gan.trainable_variables]
    with monkeypatch.context() as m:
        m.setenv(method_cache.MEASURE_VARIABLE, "0")
        assert set(dyconv_dispatch.measure(table_gan.dyconv_input_shapes(ROWS)).values()) >= {
            ("grouped", method_cache.OFF)
        }
    reference_logs, reference = one_step(table_gan)

    gan = tiny_gan()
    wanted = seed_cache(gan)
    spent = method_cache.spent_seconds()
    result = dyconv_dispatch.measure(gan.dyconv_input_shapes(ROWS))
    assert method_cache.spent_seconds() == spent
    assert result == {path: (m, method_cache.CACHED) for path, m in wanted.items()}
    logs, after = one_step(gan)
    assert logs == pytest.approx(reference_logs, rel=1e-5)
    # Gradients that instance norm makes ~0 (a bias, the routing's scale) are sums that
    # cancel: their rounding is that of the network's larger gradients.
    scale = max(float(np.abs(a - w0).max()) for w0, a in zip(start, reference))
    for w0, a, b in zip(start, reference, after):
        np.testing.assert_allclose(b - w0, a - w0, rtol=1e-3, atol=1e-4 * scale)
