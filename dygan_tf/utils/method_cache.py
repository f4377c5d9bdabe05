"""Methods chosen by timing them on the machine that runs them, and the cache that keeps
each choice, as cuDNN's benchmark mode does for its convolution algorithms.

`choose(family, shape_key, candidates, default)` times each candidate once per machine
and keeps the fastest in the user's cache folder; later runs read it back. Backend-neutral
(the standard library and numpy; Keras only inside functions): TensorFlow's, JAX's or
PyTorch's methods of a computation are all chosen through it.
"""

import datetime
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

from dygan_tf.utils import backend as backend_of_keras
from dygan_tf.utils import cache
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.cpu import cpu_flags, cpu_kind, describe_onednn

try:  # POSIX; elsewhere writers go unlocked (each write is still atomic)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

FORMAT = 1
CACHE_VARIABLE = cache.VARIABLE
MEASURE_VARIABLE = "DYGAN_MEASURE_METHODS"
BUDGET_VARIABLE = "DYGAN_MEASURE_BUDGET_S"
# Seconds one process may spend measuring: 10 % of the first demo run on a 2-core CPU
# (docs/results/performance.md, "Method choice measured in the step").
DEFAULT_BUDGET_S = 20.0
# Where a choice came from.
MEASURED = "measured"
CACHED = "cache"
ONLY = "only candidate"
OFF = "shipped table (measuring off)"
SPENT = "shipped table (measuring budget spent)"
FAILED = "shipped table (every candidate failed)"
SOURCES = (MEASURED, CACHED, ONLY, OFF, SPENT, FAILED)
# The timing: one warm-up call each (tracing, first-touch), then up to REPEATS timed calls
# taken in rounds over the candidates, so that a change of load hits all of them alike;
# a candidate slower than SLOW_RATIO x the best after a round is not timed again.
REPEATS = 5
SLOW_RATIO = 2.0
_OFF_WORDS = ("0", "false", "no", "off")

_state = {"enabled": None, "spent": 0.0, "noted": set()}


def set_measuring(enabled):
    """Turns measuring on or off for this process (a command-line flag's way), over
    DYGAN_MEASURE_METHODS; `None` hands the decision back to the variable."""
    _state["enabled"] = None if enabled is None else bool(enabled)


def measuring_enabled(default=True):
    """set_measuring's setting, else DYGAN_MEASURE_METHODS's, else `default` (a family
    whose shipped table measured as fast as measuring passes False)."""
    if _state["enabled"] is not None:
        return _state["enabled"]
    text = os.environ.get(MEASURE_VARIABLE, "").strip().lower()
    return default if not text else text not in _OFF_WORDS


def budget_seconds():
    """The measuring budget of this process: DYGAN_MEASURE_BUDGET_S or DEFAULT_BUDGET_S."""
    text = os.environ.get(BUDGET_VARIABLE)
    if text is None:
        return DEFAULT_BUDGET_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        if BUDGET_VARIABLE not in _state["noted"]:
            _state["noted"].add(BUDGET_VARIABLE)
            _note(f"{BUDGET_VARIABLE}={text!r}: expected seconds >= 0; using {DEFAULT_BUDGET_S}")
        return DEFAULT_BUDGET_S
    return value


def spent_seconds():
    """Seconds this process has spent measuring (cache hits cost nothing)."""
    return _state["spent"]


def reset_spent():
    _state["spent"] = 0.0


def cache_dir():
    """The package's one cache folder (`dygan_tf.utils.cache.cache_root`)."""
    return cache_root()


def machine_key(device="cpu"):
    """What a timing depends on besides the shapes: the CPU (its flags' digest and kind),
    threads, the Keras backend and its library's version, the device, and for TensorFlow
    whether oneDNN is on."""
    flags = cpu_flags()
    backend = backend_of_keras.name()
    key = {
        "format": FORMAT,
        "cpu_kind": cpu_kind(flags),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
        "machine": platform.machine(),
        "cpus": _usable_cpus(),
        "threads": _threads(backend),
        "backend": backend,
        "library": backend_of_keras.library_version(),
        "device": str(device),
    }
    if backend == "tensorflow":
        key["onednn"] = bool(describe_onednn()["enabled"])
    return key


def cache_path(machine):
    """One file per machine key: machines that share a home folder never contend."""
    digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(cache_dir(), "methods", f"{digest}.json")


def choose(family, shape_key, candidates, default, device="cpu", version=1):
    """`(method, source)`: the fastest of `candidates` for this shape on this machine.

    Args:
        family: what is computed, e.g. "dyconv".
        shape_key: tuple of ints and strings that decides the timing besides the machine.
        candidates: {method name: zero-argument callable that runs the computation once
            and returns when its result is ready}.
        default: the method returned when measuring is off or the budget is spent (a
            measurement starts only while this process's budget lasts, then finishes).
        device: the device the candidates run on, part of the machine key.
        version: the version of the code that chooses (part of the entry's key: entries
            an older version stored are measured again, never misread).
    Returns:
        `(method, source)`, source one of SOURCES: "cache" (read back), "measured" (timed
        now and stored), or the shipped default's reasons.
    """
    if not candidates:
        raise ValueError(f"`candidates` must not be empty. Received: candidates={candidates}")
    entry_key = _entry_key(family, shape_key, version)
    if len(candidates) == 1:
        return next(iter(candidates)), ONLY
    if not measuring_enabled():
        return default, OFF
    machine = machine_key(device)
    path = cache_path(machine)
    entries, problem = _read(path, machine)
    stored = entries.get(entry_key)
    if stored is not None:
        problem = _stale(stored, candidates)
        if problem is None:
            return stored["method"], CACHED
    elif problem and path in _state["noted"]:
        problem = None  # the file's problem was named once in this process already
    elif problem:
        _state["noted"].add(path)
    if _state["spent"] >= budget_seconds():
        return default, SPENT
    if problem:
        _note(f"{path}: {problem} ({entry_key}); measuring again")
    # A measurement started runs to its end (one cut off would be lost): the budget can
    # be overrun by one measurement.
    seconds = _measure(candidates)
    if not seconds:
        return default, FAILED
    method = min(seconds, key=seconds.get)
    entry = {
        "method": method,
        "seconds": {name: round(s, 6) for name, s in seconds.items()},
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _store(path, machine, entry_key, entry)
    return method, MEASURED


def lookup(family, shape_key, device="cpu", version=1):
    """The stored entry `{"method", "seconds": {name: s}, "measured"}` or None."""
    machine = machine_key(device)
    entry = _read(cache_path(machine), machine)[0].get(_entry_key(family, shape_key, version))
    return entry if isinstance(entry, dict) else None


def read_entries(device="cpu"):
    """{entry key: entry} cached for this machine (for records and reports)."""
    machine = machine_key(device)
    return _read(cache_path(machine), machine)[0]


def _entry_key(family, shape_key, version=1):
    """ "family:[shape...]" (version 1, as the first releases wrote it) or
    "family@vN:[shape...]"."""
    if not isinstance(family, str) or not family:
        raise ValueError(f"`family` must be a non-empty str. Received: family={family!r}")
    parts = tuple(shape_key)
    if not all(isinstance(p, (int, str)) and not isinstance(p, bool) for p in parts):
        raise ValueError(f"`shape_key` must hold ints and strs. Received: shape_key={shape_key!r}")
    named = family if version == 1 else f"{family}@v{version}"
    return f"{named}:{json.dumps(list(parts), separators=(',', ':'))}"


def _measure(candidates):
    """{name: median seconds} of the candidates that ran (failures left out)."""
    times = {name: [] for name in candidates}
    alive = list(candidates)

    def once(name):
        t0 = time.perf_counter()
        try:
            candidates[name]()
        except Exception as e:  # noqa: BLE001 (one failing method must not stop the rest)
            _note(f"{name} failed while being measured ({type(e).__name__}: {_first_line(e)})")
            alive.remove(name)
            times.pop(name)
            return
        finally:
            elapsed = time.perf_counter() - t0
            _state["spent"] += elapsed
        times[name].append(elapsed)

    for name in list(alive):
        once(name)  # warm-up (tracing, first-touch allocations): not kept
        if name in times:
            times[name].clear()
    for _ in range(REPEATS):
        for name in list(alive):
            once(name)
        if alive:
            best = min(np.median(times[n]) for n in alive)
            alive = [n for n in alive if np.median(times[n]) <= SLOW_RATIO * best]
        if len(alive) <= 1:
            break  # the winner is clear
    return {name: float(np.median(t)) for name, t in times.items() if t}


def _read(path, machine):
    """({entry key: entry}, the problem with the file or None). A missing file is no
    problem; an unreadable or foreign one reads as empty, with its problem named."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        return {}, f"unreadable method cache ({type(e).__name__}: {_first_line(e)})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        return {}, f"method cache of another format ({found!r}, expected {FORMAT})"
    if data.get("machine") != machine:
        return {}, "method cache of another machine key"
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}, "method cache without an entries table"
    return entries, None


def _stale(entry, candidates):
    """Why a stored entry cannot be used for these candidates, or None."""
    if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
        return "malformed entry"
    if entry["method"] not in candidates:
        return f"recorded method {entry['method']!r} is not a candidate any more"
    measured = entry.get("seconds")
    if not isinstance(measured, dict):
        return "entry without its timings"
    new = sorted(set(candidates) - set(measured))
    if new:
        return f"new candidates {', '.join(new)}"
    return None


def _store(path, machine, entry_key, entry):
    """Read-merge-write under an exclusive lock: another process's entries stay."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            entries, _ = _read(path, machine)
            entries[entry_key] = entry
            write_json_atomic(path, {"format": FORMAT, "machine": machine, "entries": entries})
    except OSError as e:
        _note(f"{path}: cannot write the method cache ({_first_line(e)}); the choice is not cached")


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def _threads(backend):
    """The backend's compute-thread setting where it says one, else the usable CPUs."""
    if backend == "tensorflow":
        tf = sys.modules.get("tensorflow")
        configured = tf.config.threading.get_intra_op_parallelism_threads() if tf else 0
        return int(configured or os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or _usable_cpus()
    if backend == "torch" and "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    return int(os.environ.get("OMP_NUM_THREADS") or 0) or _usable_cpus()


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _note(text):
    print(f"note: {text}", file=sys.stderr, flush=True)
