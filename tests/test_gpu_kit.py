"""The GPU kit (benchmarks/gpu_kit.py): its wheel list covers what the benchmark imports
beyond the GPU image, its checks, and its run half's JSON when the budget is spent; the
GPU profile of benchmarks/backend_step.py."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks import gpu_kit
from tests.helpers import REPO


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


KIT = {_norm(name) for name, _ in gpu_kit.WHEELS}

# In a process whose only importable distributions are `allowed` (every other installed
# top-level module is None in sys.modules, as on a machine that lacks it): import
# benchmarks.backend_step, then every module its functions import (but `skip`'s), as the
# benchmark does on its backend. Prints {"failed": {module: error}, "needs": {module:
# distributions refused that its import tried}, "loaded": [distributions of the modules
# it loaded]}.
_IMPORTS = r"""
import ast, importlib, importlib.metadata as md, json, pkgutil, re, sys

preloaded = set(sys.modules)  # the interpreter's start (site's .pth files): not ours
allowed, skip = set(json.loads(sys.argv[1])), set(json.loads(sys.argv[2]))
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
# The checkout's own packages travel with the working tree, never as a wheel (a checkout
# installed with `pip install -e .` lists them as a distribution too).
owners = {name: owner for name, owner in md.packages_distributions().items()
          if name not in ("dygan_tf", "benchmarks", "research", "tests")}
refused = {}
for module in pkgutil.iter_modules():
    name = module.name
    if name in sys.modules or name in sys.stdlib_module_names or name not in owners:
        continue
    if not all(norm(d) in allowed for d in owners[name]):
        sys.modules[name] = None
        refused[name] = owners[name]
sys.modules["tensorflow"] = None

import benchmarks.backend_step as step

wanted = []
for node in ast.walk(ast.parse(open(step.__file__).read())):
    if isinstance(node, ast.Import):
        wanted += [(a.name, None) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
        wanted += [(node.module, a.name) for a in node.names]
import builtins

attempts, real_import = [], builtins.__import__


def tracking_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in refused:
        attempts.append(name.split(".")[0])
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = tracking_import
failed, needs = {}, {}
for module, attribute in wanted:
    if module.split(".")[0] in skip or module in skip:
        continue
    del attempts[:]
    try:
        loaded = importlib.import_module(module)
        if attribute and not hasattr(loaded, attribute):
            importlib.import_module(f"{module}.{attribute}")
    except ImportError as e:
        failed[module] = repr(e)
        names, error = set(attempts), e  # the refused modules it tried, or its errors name
        while error is not None:
            names.add((getattr(error, "name", None) or "").split(".")[0])
            error = error.__cause__ or error.__context__
        found = sorted({d for name in names & set(refused) for d in refused[name]})
        if found:
            needs[module] = found
loaded = {d for m in set(sys.modules) - preloaded if sys.modules[m] is not None
          for d in owners.get(m.split(".")[0], ())}
print(json.dumps({"failed": failed, "needs": needs, "loaded": sorted(loaded)}))
"""


def _imports(backend, allowed, skip):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS, json.dumps(sorted(allowed)), json.dumps(sorted(skip))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# TensorFlow and its backend's own DyConv module (imported on that backend only): never
# on the image.
TENSORFLOW_ONLY = {"tensorflow", "dygan_tf.layers.tf_dyconv"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, image, skip",
    [
        ("jax", gpu_kit.IMAGE_JAX, TENSORFLOW_ONLY | {"torch"}),
        ("torch", gpu_kit.IMAGE_JAX + gpu_kit.IMAGE_TORCH, TENSORFLOW_ONLY),
    ],
)
def test_the_wheel_list_covers_what_the_benchmark_imports(backend, image, skip):
    """With only the GPU image's distributions and the kit's importable, the benchmark and
    every module it imports load on the backend; a new dependency fails here, named."""
    pytest.importorskip(backend)
    image = {_norm(d) for d in image}
    got = _imports(backend, image | KIT, skip)
    assert not got["needs"], f"add to gpu_kit.WHEELS: {got['needs']}"
    assert not got["failed"], got["failed"]
    beyond = {_norm(d) for d in got["loaded"]} - image - KIT
    assert not beyond, f"loaded from outside the image and the kit: {sorted(beyond)}"
    assert "keras" in {_norm(d) for d in got["loaded"]}


def _requirements(name, environment):
    from packaging.requirements import Requirement

    found = set()
    for text in importlib.metadata.requires(name) or ():
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            found.add(_norm(requirement.name))
    return found


def test_the_wheel_list_holds_keras_and_its_requirements_beyond_the_image():
    """keras's requirements, and theirs, for Python 3.12 on Linux (the installed
    distributions' metadata), less the image's, are all in WHEELS; keras at the pin of
    requirements.txt."""
    environment = {
        "python_version": gpu_kit.PYTHON_VERSION,
        "python_full_version": f"{gpu_kit.PYTHON_VERSION}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }
    image = {_norm(d) for d in gpu_kit.IMAGE_JAX}
    todo, seen = ["keras"], set()
    while todo:
        name = todo.pop()
        if name in seen or name in image:
            continue
        seen.add(name)
        todo += sorted(_requirements(name, environment))
    assert seen <= KIT, f"add to gpu_kit.WHEELS: {sorted(seen - KIT)}"
    with open(os.path.join(REPO, "requirements.txt")) as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line)
    assert dict(gpu_kit.WHEELS)["keras"] == pins["keras"]


def _touch(folder, *names):
    for name in names:
        (folder / name).write_bytes(b"")


def _wheel_names():
    names = []
    for name, version in gpu_kit.WHEELS:
        tags = "cp312-cp312-manylinux_2_27_x86_64" if name == "optree" else "py3-none-any"
        names.append(f"{gpu_kit.normalized(name)}-{version}-{tags}.whl")
    return names


def test_the_check_finds_each_listed_wheel_once_for_the_image(tmp_path):
    names = _wheel_names()
    _touch(tmp_path, *names, "six-1.0-py2.py3-none-any.whl")
    found, problems, extra = gpu_kit.find_wheels(str(tmp_path))
    assert not problems and set(found) == {n for n, _ in gpu_kit.WHEELS}
    assert [os.path.basename(p) for p in extra] == ["six-1.0-py2.py3-none-any.whl"]

    optree = next(n for n in names if n.startswith("optree"))
    (tmp_path / optree).unlink()
    _touch(tmp_path, optree.replace("cp312-cp312", "cp311-cp311"))
    _touch(tmp_path, "keras-3.15.0-py3-none-any.whl")
    (tmp_path / next(n for n in names if n.startswith("rich"))).unlink()
    _, problems, _ = gpu_kit.find_wheels(str(tmp_path))
    assert len(problems) == 2, problems
    assert any(p.startswith("optree==") and "not for cp312" in p for p in problems)
    assert any(p.startswith("rich==") and "no wheel" in p for p in problems)


@pytest.mark.parametrize(
    "tag, fits",
    [
        ("any", True),
        ("manylinux2014_x86_64", True),
        ("manylinux_2_28_x86_64", True),
        ("manylinux_2_34_x86_64", False),
        ("manylinux_2_28_aarch64", False),
        ("win_amd64", False),
    ],
)
def test_platform_tags(tag, fits):
    assert gpu_kit.platform_fits(tag) is fits


def test_the_upload_limit_counts_the_tree_and_the_wheels():
    mib = 2**20
    assert gpu_kit.size_problems(40 * mib, 20 * mib) == []
    assert gpu_kit.size_problems(50 * mib, 14 * mib)  # 64 MiB is over
    assert 0 < gpu_kit.tree_bytes() < gpu_kit.UPLOAD_LIMIT_BYTES


def test_the_run_half_writes_its_json_when_the_budget_is_spent(tmp_path, capsys):
    out = tmp_path / "out"
    status = gpu_kit.main(["run", "--budget-s", "0", "--out", str(out)])
    assert status == 0
    record = json.loads((out / gpu_kit.JSON_NAME).read_text())
    assert record["finished"] is True and "interrupted" not in record
    assert record["stages"]["install"]["status"].startswith("skipped")
    assert set(record["sections"]) == {s[0] for s in gpu_kit.SECTIONS}
    assert all(s["status"].startswith("skipped") for s in record["sections"].values())
    log = (out / gpu_kit.LOG_NAME).read_text()
    assert "jax_float32: skipped" in log and "wrote" in log
    assert "jax_float32: skipped" in capsys.readouterr().out


def test_the_run_half_needs_somewhere_to_write(monkeypatch, capsys):
    monkeypatch.delenv("DYGAN_KIT_OUT", raising=False)
    monkeypatch.delenv("OUT", raising=False)
    assert gpu_kit.main(["run", "--budget-s", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out: not given; DYGAN_KIT_OUT"), err


def test_bad_kit_flags_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert gpu_kit.main(["run", "--out", str(out), "--sections", "jax_float64"]) == 2
    assert not out.exists()
    python = str(tmp_path / "no-such-python")
    argv = ["rehearse", "--out", str(out), "--python", python]
    assert gpu_kit.main(argv) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: --sections: unknown ['jax_float64']")
    assert err[1].startswith(f"error: --python {python}: cannot run it with venv ("), err


def test_the_gpu_profile_runs_each_precision_and_measures_the_peak_once(tmp_path, monkeypatch):
    from benchmarks import backend_step

    calls = []

    def fake_measure(preset, mixed_precision, rounds, steps, matmul_peaks=None):
        compute = backend_step.COMPUTE_DTYPES[mixed_precision]
        calls.append((preset, mixed_precision, rounds, steps, dict(matmul_peaks)))
        matmul_peaks.setdefault(compute, 100.0)
        run = {"step_seconds_median": 0.5, "fraction_of_matmul_peak": 0.25}
        return {
            "dygan": run,
            "pix2pix": run,
            "flop_rate_ratio": 1.0,
            "matmul_peak_gflops_per_s": {compute: matmul_peaks[compute]},
            "device_memory": None,
        }

    monkeypatch.setattr(backend_step, "measure", fake_measure)
    monkeypatch.setattr(backend_step, "machine", lambda: {"backend": "jax"})
    monkeypatch.setattr(backend_step, "device_facts", lambda: {"device_name": "cpu"})
    out = tmp_path / "profile.json"
    backend_step.gpu_profile(str(out), "tiny", rounds=1, steps=2)
    record = json.loads(out.read_text())
    assert [c[:4] for c in calls] == [("tiny", "none", 1, 2), ("tiny", "bfloat16", 1, 2)]
    assert calls[1][4] == {"float32": 100.0}  # the dict carries the peaks across runs
    assert set(record["runs"]) == {"float32", "bfloat16"}
    assert record["runs"]["bfloat16"]["mixed_precision"] == "bfloat16"
    assert record["matmul_peak_gflops_per_s"] == {"float32": 100.0, "bfloat16": 100.0}
    assert record["machine"] == {"backend": "jax", "device_name": "cpu"}
    assert "matmul_peak_gflops_per_s" not in record["runs"]["float32"]


def test_profile_gpu_defaults_to_the_paper_preset_and_both_precisions(tmp_path, monkeypatch):
    from benchmarks import backend_step

    seen = []
    monkeypatch.setattr(
        backend_step, "gpu_profile", lambda *a, **k: seen.append((a, k)) or {"runs": {}}
    )
    out = str(tmp_path / "p.json")
    backend_step.main(["--profile", "gpu", "--out", out])
    backend_step.main(
        ["--profile", "gpu", "--preset", "tiny", "--mixed-precision", "bfloat16"] + ["--out", out]
    )
    assert seen == [
        ((out, "paper", ("none", "bfloat16"), 4, 5), {"warmup": 2}),
        ((out, "tiny", ("bfloat16",), 4, 5), {"warmup": 2}),
    ]


def test_the_gpu_profile_adds_the_xla_step_records_failures_and_keeps_a_budget(
    tmp_path, monkeypatch
):
    """`xla=True` (benchmarks.run --gpu on TensorFlow) times the last precision again with
    jit_compile; a run that raises is recorded and the next still runs; past the budget
    the runs are recorded as skipped; `header` and `options` reach the record and
    `measure`."""
    from benchmarks import backend_step

    calls = []

    def fake_measure(preset, mixed_precision, rounds, steps, matmul_peaks=None, **options):
        calls.append((mixed_precision, options))
        if mixed_precision == "none":
            raise RuntimeError("deliberately broken")
        run = {"step_seconds_median": 0.5, "fraction_of_matmul_peak": 0.25}
        return {"dygan": run, "pix2pix": run, "flop_rate_ratio": 1.0}

    monkeypatch.setattr(backend_step, "measure", fake_measure)
    monkeypatch.setattr(backend_step, "machine", lambda: {"backend": "tensorflow"})
    monkeypatch.setattr(backend_step, "device_facts", lambda: {"device_name": "cpu"})
    out = tmp_path / "profile.json"
    record = backend_step.gpu_profile(
        str(out), "tiny", rounds=1, steps=1, xla=True, header={"profile": "gpu-tiny"}, depth=1
    )
    assert calls == [
        ("none", {"depth": 1}),
        ("bfloat16", {"depth": 1}),
        ("bfloat16", {"depth": 1, "jit_compile": True}),
    ]
    assert json.loads(out.read_text()) == record and record["profile"] == "gpu-tiny"
    assert list(record["runs"]) == ["float32", "bfloat16", "bfloat16_xla"]
    assert record["runs"]["float32"]["error"] == "RuntimeError: deliberately broken"
    assert record["runs"]["bfloat16_xla"]["flop_rate_ratio"] == 1.0

    calls.clear()
    record = backend_step.gpu_profile(str(out), "tiny", rounds=1, steps=1, budget_s=-1)
    assert calls == [] and set(record["runs"]) == {"float32", "bfloat16"}
    assert all(run["skipped"].startswith("time budget") for run in record["runs"].values())
