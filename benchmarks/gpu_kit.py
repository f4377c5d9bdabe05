"""The GPU kit: the train-step benchmark on an offline GPU machine, in one script.

The GPU machine we measure on (one NVIDIA H100 or H200; Python 3.12 with JAX 0.11.2 for
CUDA 13, PyTorch 2.11, numpy 2.x and h5py; no TensorFlow, no package registry; an upload
of at most 64 MiB; minutes per run) lacks only Keras and its pure-Python dependencies,
and many users' cluster nodes are offline in the same way. WHEELS below is the one list of
them, read by both halves and by tests/test_gpu_kit.py.

Here, on a machine with a package registry, from the repository root:

    python -m benchmarks.gpu_kit download   # WHEELS into .gpu_kit/wheels/ (ignored), checked
    python -m benchmarks.gpu_kit check      # the check alone: each wheel there once, tagged
                                            # for cp312 manylinux x86_64; tree + wheels < 64 MiB

There, in the uploaded working tree with .gpu_kit/ beside it, from the repository root:

    python -m benchmarks.gpu_kit run        # gpu_kit.json, gpu_kit.log in $DYGAN_KIT_OUT
                                            # (else $OUT)

`run` installs the wheels into a temporary folder (`pip install --no-index --no-deps
--target`), prints the versions and the devices, then runs `benchmarks.backend_step
--profile gpu` in sections, each in a process that cannot import TensorFlow: JAX float32,
JAX bfloat16, then PyTorch (float32, then bfloat16) if PyTorch is there and time is left.
It stops itself at a time budget (--budget-s or DYGAN_KIT_BUDGET_S, default 480 s): each
section is given what is left and is skipped when less than --min-section-s remains. The
JSON is rewritten (atomically) after every step, so the JSON of what finished is always
there, also after a SIGTERM. The DyConv methods measured on the device (DYGAN_CACHE_DIR,
a temporary folder unless set) are copied into the JSON. --preset (DYGAN_KIT_PRESET)
picks a smaller preset than `paper`, for a rehearsal on a CPU.

    python -m benchmarks.gpu_kit rehearse --python python3.12 --out DIR

is that rehearsal: a fresh venv holding only what the GPU image holds (REHEARSAL_IMAGE,
the CPU build of JAX), TensorFlow and Keras checked absent there, and `run` in it at the
tiny preset with the downloaded wheels.

Only the standard library is imported here: `run` starts before Keras is installed.
"""

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

from benchmarks.gpu_kit_wheels import (  # noqa: F401 (the kit's one wheel list, re-exported)
    ABI_TAGS,
    IMAGE_JAX,
    IMAGE_TORCH,
    JSON_NAME,
    KIT_DIR,
    LOG_NAME,
    MAX_GLIBC,
    PLATFORMS,
    PYTHON_TAGS,
    PYTHON_VERSION,
    REHEARSAL_IMAGE,
    REPO,
    UPLOAD_LIMIT_BYTES,
    VERSIONS_SCRIPT,
    WHEELS,
    WHEELS_DIR,
    WITHOUT_TENSORFLOW,
    KitError,
    check,
    download,
    find_wheels,
    folder_bytes,
    normalized,
    parse_wheel,
    platform_fits,
    rehearse,
    size_problems,
    tags_fit,
    tree_bytes,
)

# (name, Keras backend, --mixed-precision or None for both), fastest first: the budget
# cuts the last ones.
SECTIONS = (
    ("jax_float32", "jax", "none"),
    ("jax_bfloat16", "jax", "bfloat16"),
    ("torch", "torch", None),
)
DEFAULT_BUDGET_S = 480.0
MIN_SECTION_S = 20.0
# Seconds each section's process may spend timing DyConv methods (DYGAN_MEASURE_BUDGET_S
# wins): the library's 20 s is sized for a CPU's first run, short of a paper-size G and
# D's 16 measuring layers with each candidate compiled on a GPU.
MEASURE_BUDGET_S = "60"


class _Stopped(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Stopped(f"signal {signum}")


class Kit:
    """The run's JSON and log in `out`; `save()` writes the JSON atomically."""

    def __init__(self, out):
        os.makedirs(out, exist_ok=True)
        self.json_path = os.path.join(out, JSON_NAME)
        self.log_path = os.path.join(out, LOG_NAME)
        self.log = open(self.log_path, "a", encoding="utf-8")  # closed by run()
        self.record = {}

    def say(self, text):
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        print(text, flush=True)
        self.log.write(f"[{stamp}] {text}\n")
        self.log.flush()

    def save(self):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.json_path), suffix=".partial")
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.record, f, indent=1, default=str)
            f.write("\n")
        os.replace(tmp, self.json_path)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(kit, wheels_dir, site, timeout):
    found, problems, _ = find_wheels(wheels_dir)
    kit.record["wheels"] = {
        name: {"file": os.path.basename(p), "bytes": os.path.getsize(p), "sha256": _sha256(p)}
        for name, p in found.items()
    }
    if problems:
        return {"status": "failed", "problems": problems}
    files = [found[name] for name, _ in WHEELS]
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if pip.returncode == 0:
        command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q"]
        command += ["--disable-pip-version-check", "--target", site, *files]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        kit.log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            return {"status": "failed", "how": "pip", "error": done.stderr[-2000:]}
        return {"status": "done", "how": "pip install --no-index --no-deps --target"}
    for path in files:  # no pip: a wheel is a zip of its files (none of these has scripts)
        with zipfile.ZipFile(path) as wheel:
            wheel.extractall(site)
    return {"status": "done", "how": "unzipped (no pip in this Python)"}


def _section_env(site, backend, cache):
    env = dict(os.environ)
    paths = [site, REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["KERAS_BACKEND"] = backend
    env.setdefault("DYGAN_CACHE_DIR", cache)
    env.setdefault("DYGAN_MEASURE_BUDGET_S", MEASURE_BUDGET_S)
    return env


def _log_tail(kit, offset, lines=15):
    kit.log.flush()
    with open(kit.log_path, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        tail = f.read().splitlines()[-lines:]
    for line in tail:
        print(f"    {line}", flush=True)


def _method_cache(cache):
    entries = {}
    for path in sorted(glob.glob(os.path.join(cache, "**", "*.json"), recursive=True)):
        try:
            with open(path, encoding="utf-8") as f:
                entries[os.path.relpath(path, cache)] = json.load(f)
        except (OSError, ValueError) as e:
            entries[os.path.relpath(path, cache)] = f"unreadable: {e!r}"
    return entries


def _run_section(kit, name, backend, precision, options, site, cache, timeout):
    out = os.path.join(os.path.dirname(site), f"{name}.json")
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, "--backend", backend]
    command += ["--profile", "gpu", "--preset", options.preset, "--out", out]
    command += ["--rounds", str(options.rounds), "--steps", str(options.steps)]
    if precision:
        command += ["--mixed-precision", precision]
    arguments = " ".join(command[3:])
    kit.say(f"{name}: python -m benchmarks.backend_step {arguments} (timeout {timeout:.0f} s)")
    kit.log.flush()
    offset = os.path.getsize(kit.log_path)
    began = time.monotonic()
    section = {"command": command[3:], "timeout_s": round(timeout, 1)}
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            env=_section_env(site, backend, cache),
            stdout=kit.log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        section["returncode"] = done.returncode
        section["status"] = "done" if done.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        section["status"] = "timed out"
    section["seconds"] = round(time.monotonic() - began, 1)
    if os.path.isfile(out):  # what finished: a profile is rewritten after each precision
        with open(out, encoding="utf-8") as f:
            section["record"] = json.load(f)
        if section["status"] != "done":
            section["status"] += " (partial record)"
    _log_tail(kit, offset)
    return section


def run(options):
    """The half that runs on the GPU machine; returns the exit status."""
    start = time.monotonic()
    names = [s for s in options.sections.split(",") if s]
    unknown = set(names) - {s[0] for s in SECTIONS}
    if unknown:
        raise KitError(f"--sections: unknown {sorted(unknown)}; known {[s[0] for s in SECTIONS]}")
    kit = Kit(options.out)
    work = tempfile.mkdtemp(prefix="dygan-gpu-kit-")
    site, cache = os.path.join(work, "site"), os.path.join(work, "cache")
    kit.record = {
        "what": "benchmarks.gpu_kit run: backend_step --profile gpu per section",
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "budget_s": options.budget_s,
        "preset": options.preset,
        "rounds": options.rounds,
        "steps": options.steps,
        "finished": False,
        "wheels": {},
        "stages": {},
        "sections": {},
        "method_cache": {},
    }
    stages, sections = kit.record["stages"], kit.record["sections"]

    def left():
        return options.budget_s - (time.monotonic() - start)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    status = 0
    try:
        kit.say(
            f"gpu kit: budget {options.budget_s:g} s, preset {options.preset}, out {options.out}"
        )
        kit.save()
        if left() <= 0:
            stages["install"] = {"status": "skipped (budget spent)"}
        else:
            try:
                stages["install"] = _install(kit, options.wheels, site, left())
            except subprocess.TimeoutExpired:
                stages["install"] = {"status": "timed out"}
        kit.say(f"install: {json.dumps(stages['install'])}")
        kit.save()
        installed = stages["install"]["status"] == "done"
        versions = None
        if installed and left() > 0:
            try:
                done = subprocess.run(
                    [sys.executable, "-c", VERSIONS_SCRIPT],
                    env=_section_env(site, "jax", cache),
                    capture_output=True,
                    text=True,
                    timeout=left(),
                )
                kit.log.write(done.stderr)
                if done.returncode == 0:
                    versions = json.loads(done.stdout.strip().splitlines()[-1])
                    stages["versions"] = {"status": "done", **versions}
                else:
                    stages["versions"] = {"status": "failed", "error": done.stderr[-2000:]}
            except subprocess.TimeoutExpired:
                stages["versions"] = {"status": "timed out"}
        else:
            why = "budget spent" if installed else "not installed"
            stages["versions"] = {"status": f"skipped ({why})"}
        kit.say(f"versions: {json.dumps(stages['versions'])}")
        kit.save()
        for name, backend, precision in SECTIONS:
            if name not in names:
                continue
            if not installed:
                sections[name] = {"status": f"skipped (install: {stages['install']['status']})"}
            elif versions and backend == "torch" and versions["versions"].get("torch") is None:
                sections[name] = {"status": "skipped (PyTorch is not installed)"}
            elif left() < options.min_section_s:
                sections[name] = {"status": f"skipped (budget: {max(left(), 0):.0f} s left)"}
            else:
                sections[name] = _run_section(
                    kit, name, backend, precision, options, site, cache, left()
                )
            kit.record["method_cache"] = _method_cache(cache)
            kit.say(f"{name}: {sections[name]['status']}")
            kit.save()
        failed = [n for n, s in {**stages, **sections}.items() if s["status"].startswith("failed")]
        status = 1 if failed else 0
    except _Stopped as e:
        kit.record["interrupted"] = str(e)
        kit.say(f"stopped by {e}; the JSON keeps what finished")
        status = 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        kit.record["finished"] = "interrupted" not in kit.record
        kit.record["seconds"] = round(time.monotonic() - start, 1)
        kit.save()
        kit.say(f"wrote {kit.json_path} ({kit.record['seconds']} s)")
        kit.log.close()
        shutil.rmtree(work, ignore_errors=True)
    return status


def _parser():
    parser = argparse.ArgumentParser(prog="benchmarks.gpu_kit", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    download_ = commands.add_parser("download", help="here: the wheels into --wheels, checked")
    check_ = commands.add_parser("check", help="here: the wheels complete, the upload's size")
    for sub in (download_, check_):
        sub.add_argument("--wheels", default=WHEELS_DIR)
    for name, help_ in (
        ("run", "there: install the wheels, run the GPU profile"),
        ("rehearse", "here: `run` in a venv holding only the GPU image's packages"),
    ):
        sub = commands.add_parser(name, help=help_)
        sub.add_argument("--wheels", default=WHEELS_DIR)
        sub.add_argument(
            "--out",
            default=os.environ.get("DYGAN_KIT_OUT") or os.environ.get("OUT"),
            help="folder of gpu_kit.json and gpu_kit.log (default $DYGAN_KIT_OUT, else $OUT)",
        )
        sub.add_argument(
            "--budget-s",
            type=float,
            default=float(os.environ.get("DYGAN_KIT_BUDGET_S", DEFAULT_BUDGET_S)),
        )
        sub.add_argument("--min-section-s", type=float, default=MIN_SECTION_S)
        sub.add_argument(
            "--preset",
            choices=("paper", "demo", "tiny"),
            default=os.environ.get("DYGAN_KIT_PRESET") or ("paper" if name == "run" else "tiny"),
        )
        sub.add_argument("--rounds", type=int, default=4 if name == "run" else 1)
        sub.add_argument("--steps", type=int, default=5 if name == "run" else 1)
        sub.add_argument("--sections", default=",".join(s[0] for s in SECTIONS))
        if name == "rehearse":
            sub.add_argument("--python", default="python3.12", help="the venv's Python")
            sub.add_argument("--venv", help="the venv's folder (default: a temporary one)")
    return parser


def main(argv=None):
    options = _parser().parse_args(argv)
    options.wheels = os.path.abspath(options.wheels)
    try:
        return _command(options)
    except KitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _command(options):
    if options.command in ("run", "rehearse"):
        if not options.out:
            raise KitError("--out: not given; DYGAN_KIT_OUT or OUT may name the folder instead")
        options.out = os.path.abspath(options.out)
    if options.command == "download":
        return 1 if download(options.wheels) else 0
    if options.command == "check":
        return 1 if check(options.wheels) else 0
    if options.command == "run":
        return run(options)
    return rehearse(options)


if __name__ == "__main__":
    sys.exit(main())
