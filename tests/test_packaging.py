"""`pip install .` without network: dygan_tf installs with its commands (`dygan-fit`, ...;
no generic top-level `data_prep`, `tuning` or `benchmarks` in site-packages: they stay
in the checkout as its `python -m` forms), the declared dependencies are
requirements.txt's pins, and every command runs from another folder with only the
installed copy on the path."""

import glob
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import dygan_tf
from tests.helpers import REPO

pytestmark = pytest.mark.slow

PACKAGES = ("dygan_tf",)
CHECKOUT_ONLY = ("data_prep", "tuning", "benchmarks", "research", "tests")
SCRIPTS = {  # installed command -> its usage line's program name: its own name
    name: name
    for name in (
        "dygan-fit",
        "dygan-evaluate",
        "dygan-evaluate-volumes",
        "dygan-translate",
        "dygan-export",
        "dygan-build-tfrecords",
        "dygan-make-phantom",
        "dygan-build-benchmark",
        "dygan-search-lambda",
    )
}


def _python_files(root, package):
    pattern = os.path.join(root, package, "**", "*.py")
    return sorted(os.path.relpath(p, root) for p in glob.glob(pattern, recursive=True))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(source copy, install target): the project as pyproject.toml packages it."""
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the repo.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(os.path.join(REPO, name), source)
    for package in (*PACKAGES, "data_prep", "tuning", "benchmarks", "research"):  # in the tree
        shutil.copytree(
            os.path.join(REPO, package),
            source / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return source, target


def _distribution(target):
    (info,) = glob.glob(os.path.join(target, "dygan_tf-*.dist-info"))
    return importlib.metadata.PathDistribution(pathlib.Path(info))


def test_dygan_tf_installs_with_every_module_and_no_generic_top_level_name(installed):
    source, target = installed
    assert set(PACKAGES) <= set(os.listdir(target))
    for package in PACKAGES:
        assert os.path.isfile(os.path.join(target, package, "__init__.py")), package
        assert _python_files(target, package) == _python_files(source, package), package
    for stays in CHECKOUT_ONLY:  # in the repository only
        assert stays not in os.listdir(target)


def test_dependencies_are_the_pins_of_requirements_txt(installed):
    _, target = installed
    with open(os.path.join(REPO, "requirements.txt")) as f:
        pins = [line.split("#")[0].strip() for line in f]
    pins = [p for p in pins if p]
    assert pins and all("==" in p for p in pins)
    distribution = _distribution(target)
    assert distribution.requires == pins
    assert distribution.metadata["Name"].replace("_", "-") == "dygan-tf"
    assert distribution.version == dygan_tf.__version__


# Runs where the repository is not on the path: prints where each package came from,
# then runs `python -m dygan_tf.fit --help` (runpy is what `python -m` uses).
_OUTSIDE = """
import json, runpy, sys
import dygan_tf
print(json.dumps({m.__name__: m.__file__ for m in (dygan_tf,)}))
sys.stdout.flush()
sys.argv = ["dygan_tf.fit", "--help"]
runpy.run_module("dygan_tf.fit", run_name="__main__", alter_sys=True)
"""


def _run_installed(target, argv, cwd):
    """`python argv...` in `cwd` with only the installed copy `target` on the path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_command_runs_from_another_folder_with_the_installed_copy(installed, tmp_path):
    _, target = installed
    result = _run_installed(target, ["-c", _OUTSIDE], tmp_path)
    first, rest = result.stdout.split("\n", 1)
    files = json.loads(first)
    assert sorted(files) == sorted(PACKAGES)
    for name, path in files.items():
        assert path == os.path.join(str(target), name, "__init__.py"), (name, path)
    assert rest.startswith("usage: dygan-fit") and "--data" in rest and "--preset" in rest


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_installed_command_runs(installed, script, tmp_path):
    _, target = installed
    executable = os.path.join(target, "bin", script)
    assert os.path.isfile(executable), sorted(os.listdir(os.path.join(target, "bin")))
    result = _run_installed(target, [executable, "--help"], tmp_path)
    assert result.stdout.startswith(f"usage: {SCRIPTS[script]}"), result.stdout[:200]
