"""The GPU kit's "here" half: the one list of wheels the GPU image lacks, getting and
checking them, and the rehearsal on a CPU in a venv that holds only what the image holds
(`python -m benchmarks.gpu_kit download | check | rehearse`, see gpu_kit.py).
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT_DIR = os.path.join(REPO, ".gpu_kit")
WHEELS_DIR = os.path.join(KIT_DIR, "wheels")

# What the GPU image lacks, (distribution, version), each a wheel: keras at the project's
# pin (requirements.txt), its dependencies beyond the image (absl-py, namex, optree, rich,
# packaging), rich's (markdown-it-py, mdurl, pygments) and optree's (typing-extensions,
# which the image has only through PyTorch), at the versions pip resolved for keras 3.15.1
# and Python 3.12.
WHEELS = (
    ("keras", "3.15.1"),
    ("absl-py", "2.5.1"),
    ("namex", "0.1.0"),
    ("optree", "0.20.0"),
    ("packaging", "26.4"),
    ("rich", "15.0.0"),
    ("markdown-it-py", "4.3.0"),
    ("mdurl", "0.1.2"),
    ("pygments", "2.21.0"),
    ("typing-extensions", "4.16.0"),
)
# The target: the image's Python, its C library (wheels up to manylinux_2_28) and CPU.
PYTHON_VERSION = "3.12"
PYTHON_TAGS = ("cp312", "py3")
ABI_TAGS = ("cp312", "abi3", "none")
MAX_GLIBC = (2, 28)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
UPLOAD_LIMIT_BYTES = 64 * 2**20

# What the GPU image holds (distributions; tests/test_gpu_kit.py subtracts them): the JAX
# stack (jax's own requirements and the CUDA plugins) and PyTorch with its requirements.
IMAGE_JAX = (
    "numpy",
    "h5py",
    "ml-dtypes",
    "jax",
    "jaxlib",
    "scipy",
    "opt-einsum",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
)
IMAGE_TORCH = (
    "torch",
    "triton",
    "filelock",
    "typing-extensions",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "markupsafe",
    "fsspec",
    "setuptools",
)


def normalized(name):
    """A distribution's name as wheel files and indexes compare it (PEP 503, with _)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_wheel(filename):
    """(distribution, version, python tags, abi tags, platform tags) of a wheel's file name,
    or None for a name that is not a wheel's."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    name, version, python, abi, plat = parts[0], parts[1], *parts[-3:]
    return normalized(name), version, python.split("."), abi.split("."), plat.split(".")


def platform_fits(tag):
    if tag == "any":
        return True
    if tag in ("manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"):
        return True
    found = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", tag)
    return bool(found) and (int(found[1]), int(found[2])) <= MAX_GLIBC


def tags_fit(python, abi, plat):
    return (
        any(t in PYTHON_TAGS for t in python)
        and any(t in ABI_TAGS for t in abi)
        and any(platform_fits(t) for t in plat)
    )


def find_wheels(wheels_dir=WHEELS_DIR, wheels=WHEELS):
    """({distribution: path} of WHEELS found, [problems], [files not in the list])."""
    files = sorted(glob.glob(os.path.join(wheels_dir, "*.whl")))
    parsed = {path: parse_wheel(os.path.basename(path)) for path in files}
    found, problems, used = {}, [], set()
    for name, version in wheels:
        matches = [p for p, w in parsed.items() if w and w[:2] == (normalized(name), version)]
        used.update(matches)
        fitting = [p for p in matches if tags_fit(*parsed[p][2:])]
        if not matches:
            problems.append(f"{name}=={version}: no wheel in {wheels_dir}")
        elif not fitting:
            names = ", ".join(os.path.basename(p) for p in matches)
            problems.append(f"{name}=={version}: {names} is not for {PYTHON_TAGS[0]} manylinux")
        elif len(fitting) > 1:
            problems.append(f"{name}=={version}: several wheels ({len(fitting)})")
        else:
            found[name] = fitting[0]
    return found, problems, [p for p in files if p not in used]


def tree_bytes(repo=REPO):
    """Bytes of the working tree as it is uploaded: the tracked files and the untracked
    ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    total = 0
    for name in {n for n in listed if n}:
        path = os.path.join(repo, os.fsdecode(name))
        if os.path.isfile(path) and not os.path.islink(path):
            total += os.path.getsize(path)
    return total


def folder_bytes(folder):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, names in os.walk(folder) for f in names
    )


def size_problems(tree, wheels, limit=UPLOAD_LIMIT_BYTES):
    if tree + wheels < limit:
        return []
    return [
        f"tree {tree / 2**20:.1f} MiB + wheels {wheels / 2**20:.1f} MiB >= {limit / 2**20:g} MiB"
    ]


def check(wheels_dir=WHEELS_DIR, repo=REPO, say=print):
    """Completeness and size; returns the problems (empty: the kit is ready)."""
    found, problems, extra = find_wheels(wheels_dir)
    for name, _ in WHEELS:
        if name in found:
            size = os.path.getsize(found[name])
            say(f"  {os.path.basename(found[name])}  {size / 1e6:.3f} MB")
    for path in extra:
        say(f"  {os.path.basename(path)}: not in WHEELS (uploaded, not installed)")
    wheels = folder_bytes(wheels_dir) if os.path.isdir(wheels_dir) else 0
    tree = tree_bytes(repo)
    say(
        f"wheels {len(found)}/{len(WHEELS)}, {wheels / 2**20:.2f} MiB; working tree "
        f"{tree / 2**20:.2f} MiB; together {(tree + wheels) / 2**20:.2f} MiB "
        f"(limit {UPLOAD_LIMIT_BYTES / 2**20:g} MiB)"
    )
    problems += size_problems(tree, wheels)
    for problem in problems:
        say(f"problem: {problem}")
    return problems


def download(wheels_dir=WHEELS_DIR, python=sys.executable):
    """WHEELS for the GPU image into `wheels_dir` (other wheels there removed), checked."""
    os.makedirs(wheels_dir, exist_ok=True)
    wanted = {(normalized(n), v) for n, v in WHEELS}
    for path in glob.glob(os.path.join(wheels_dir, "*.whl")):
        parsed = parse_wheel(os.path.basename(path))
        if not parsed or parsed[:2] not in wanted:
            print(f"removing {os.path.basename(path)} (not in WHEELS)")
            os.remove(path)
    command = [python, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    command += ["--abi", PYTHON_TAGS[0], "--dest", wheels_dir]
    for plat in PLATFORMS:
        command += ["--platform", plat]
    command += [f"{name}=={version}" for name, version in WHEELS]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return check(wheels_dir)


# A section's process: TensorFlow refused as on a machine that lacks it.
WITHOUT_TENSORFLOW = (
    "import runpy, sys\n"
    "sys.modules['tensorflow'] = None\n"
    "sys.argv = ['benchmarks.backend_step', *sys.argv[1:]]\n"
    "runpy.run_module('benchmarks.backend_step', run_name='__main__', alter_sys=True)\n"
)
# Versions and devices, in the installed environment; one JSON line.
VERSIONS_SCRIPT = r"""
import importlib.metadata as md, importlib.util, json, platform, shutil, subprocess, sys
out = {"python": platform.python_version(), "versions": {}, "devices": {}}
for name in ("jax", "jaxlib", "keras", "numpy", "h5py", "ml-dtypes", "optree", "scipy",
             "torch", "jax-cuda13-plugin", "jax-cuda12-plugin"):
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        out["versions"][name] = None
out["tensorflow_importable"] = importlib.util.find_spec("tensorflow") is not None
try:
    import keras
    out["keras_file"] = keras.__file__
except Exception as e:
    out["keras_error"] = repr(e)
try:
    import jax
    out["devices"]["jax"] = [str(d) for d in jax.devices()]
    out["devices"]["jax_device_kind"] = jax.devices()[0].device_kind
    out["devices"]["jax_default_backend"] = jax.default_backend()
except Exception as e:
    out["devices"]["jax_error"] = repr(e)
try:
    import torch
    cuda = torch.cuda.is_available()
    out["devices"]["torch_cuda"] = cuda
    out["devices"]["torch_device_name"] = torch.cuda.get_device_name(0) if cuda else "cpu"
    out["versions"]["torch_cuda"] = torch.version.cuda
except ImportError as e:
    out["devices"]["torch_error"] = repr(e)
if shutil.which("nvidia-smi"):
    query = "--query-gpu=name,memory.total,driver_version"
    smi = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    out["devices"]["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
print(json.dumps(out))
"""

# The rehearsal's venv: what the image holds for the JAX sections, JAX's CPU build.
REHEARSAL_IMAGE = ("numpy", "h5py", "ml-dtypes", "jax==0.11.2", "jaxlib==0.11.2")
JSON_NAME, LOG_NAME = "gpu_kit.json", "gpu_kit.log"


class KitError(Exception):
    """A bad flag or a missing prerequisite: one `error:` line, exit 2."""


def rehearse(options):
    """`run` in a fresh venv of `options.python` holding only REHEARSAL_IMAGE."""
    try:
        probe = subprocess.run(
            [options.python, "-c", "import sys, venv; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        )
    except OSError as e:
        probe = subprocess.CompletedProcess([], 127, "", e.strerror or str(e))
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["no output"])[0]
        raise KitError(f"--python {options.python}: cannot run it with venv ({why})")
    venv = options.venv or tempfile.mkdtemp(prefix="dygan-gpu-kit-venv-")
    if subprocess.run([options.python, "-m", "venv", "--clear", venv]).returncode != 0:
        raise KitError(f"--venv {venv}: {options.python} -m venv failed (see above)")
    python = os.path.join(venv, "bin", "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if subprocess.run([*pip, *REHEARSAL_IMAGE]).returncode != 0:
        raise KitError(
            f"--venv {venv}: pip could not install the GPU image's packages "
            f"({' '.join(REHEARSAL_IMAGE)}); the rehearsal needs the package registry"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    absent = {}
    for module in ("tensorflow", "keras"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=env)
        absent[module] = probe.returncode != 0
    if not all(absent.values()):
        raise KitError(f"--venv {venv}: not the GPU image's packages alone: importable {absent}")
    freeze = subprocess.run(
        [python, "-m", "pip", "freeze"], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    print(f"rehearsal venv {venv}: {' '.join(freeze)}; tensorflow and keras absent", flush=True)
    command = [python, "-m", "benchmarks.gpu_kit", "run", "--out", options.out]
    command += ["--wheels", options.wheels, "--budget-s", str(options.budget_s)]
    command += ["--preset", options.preset, "--rounds", str(options.rounds)]
    command += ["--steps", str(options.steps), "--sections", options.sections]
    status = subprocess.run(command, cwd=REPO, env=env).returncode
    path = os.path.join(options.out, JSON_NAME)
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    record["rehearsal"] = {
        "venv_packages": freeze,
        "tensorflow_importable": not absent["tensorflow"],
        "keras_importable_before_the_kit": not absent["keras"],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, default=str)
        f.write("\n")
    return status
