"""The subpackages' public names: importable from the subpackage, lazily (no Keras or
TensorFlow at import), each with a docstring example that runs."""

import contextlib
import doctest
import inspect
import io
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import dygan_tf.config
import dygan_tf.data
import dygan_tf.layers
import dygan_tf.models

PUBLIC = {
    dygan_tf.layers: ("DyConv2D", "InstanceNormalization"),
    dygan_tf.models: ("DyGAN", "build_discriminator", "build_dygan", "build_generator"),
    dygan_tf.config: ("get_preset", "task_code"),
    dygan_tf.data: ("DatasetSpec",),
}


def test_every_public_name_is_exported_and_listed():
    for package, names in PUBLIC.items():
        assert tuple(package.__all__) == names
        for name in names:
            value = getattr(package, name)
            assert value.__name__ == name and name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'DyConv'"):
        dygan_tf.layers.DyConv  # noqa: B018


TOP_LEVEL = (
    "DatasetSpec",
    "DyConv2D",
    "DyGAN",
    "InstanceNormalization",
    "Predictor",
    "build_discriminator",
    "build_dygan",
    "build_generator",
    "get_preset",
    "load_run",
    "make_dataset",
    "task_code",
)


def test_the_package_exports_the_flat_api_lazily():
    assert tuple(dygan_tf.__all__) == TOP_LEVEL
    for name in TOP_LEVEL:
        assert getattr(dygan_tf, name).__name__ == name and name in dir(dygan_tf)
    assert dygan_tf.DyConv2D is dygan_tf.layers.DyConv2D
    with pytest.raises(AttributeError, match="has no attribute 'DyConv'"):
        dygan_tf.DyConv  # noqa: B018


def test_importing_the_packages_starts_neither_keras_nor_tensorflow():
    code = (
        "import sys\n"
        "import dygan_tf.config, dygan_tf.data, dygan_tf.layers, dygan_tf.models\n"
        "from dygan_tf.config import get_preset, task_code\n"
        "from dygan_tf.data import DatasetSpec\n"
        "get_preset('tiny'); task_code('t2', 't1'); DatasetSpec(source='any')\n"
        "from dygan_tf import DatasetSpec, get_preset, task_code\n"  # the flat API too
        "get_preset('tiny'); task_code('t2', 't1'); DatasetSpec(source='any')\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def _example(obj):
    """The code of `obj`'s docstring example: a ```python block, else None (its >>>
    lines are run as a doctest)."""
    doc = inspect.getdoc(obj)
    assert "Example" in doc, f"{obj.__name__} has no docstring example"
    block = re.search(r"```python\n(.*?)```", doc, re.S)
    return block.group(1) if block else None


@pytest.mark.parametrize(
    "package, name", [(p, n) for p, names in PUBLIC.items() for n in names], ids=str
)
def test_the_docstring_example_runs(package, name):
    obj = getattr(package, name)
    keras.utils.set_random_seed(0)
    namespace = {"np": np, "keras": keras}
    namespace.update({n: getattr(p, n) for p, names in PUBLIC.items() for n in names})
    namespace.update({"task_code": dygan_tf.config.task_code})
    code = _example(obj)
    if code is not None:
        assert code.strip()
        exec(compile(code, f"<{name} example>", "exec"), namespace)  # noqa: S102
        return
    # >>> examples: every printed value and raised error is checked, as doctest does.
    test = doctest.DocTestParser().get_doctest(inspect.getdoc(obj), namespace, name, None, 0)
    assert test.examples, f"{name}: no >>> lines in its example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    with contextlib.redirect_stdout(io.StringIO()) as report:
        result = runner.run(test)
    assert result.failed == 0, report.getvalue()
