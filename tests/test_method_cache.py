"""dygan_tf.utils.method_cache: methods timed once per machine and read back after; a
corrupt or stale cache re-measured with one note, measuring off or out of budget giving
the default, and processes writing at once keeping every entry."""

import json
import os
import subprocess
import sys
import textwrap
import time
import types

import pytest

from dygan_tf.utils import method_cache
from tests.helpers import REPO


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A cache folder of the test's own, measuring on with a budget, nothing spent."""
    monkeypatch.setenv(method_cache.CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.delenv(method_cache.MEASURE_VARIABLE, raising=False)
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "60")
    monkeypatch.setattr(method_cache, "REPEATS", 3)
    # The candidates below take their seconds on a clock of the test's own, so a busy
    # machine (a sleep that overruns) cannot reorder them.
    CLOCK.now = 0.0
    monkeypatch.setattr(method_cache, "time", types.SimpleNamespace(perf_counter=lambda: CLOCK.now))
    method_cache.set_measuring(None)
    method_cache.reset_spent()
    monkeypatch.setattr(method_cache, "_state", dict(method_cache._state, noted=set()))
    yield tmp_path / "cache"
    method_cache.set_measuring(None)


CLOCK = types.SimpleNamespace(now=0.0)  # method_cache's perf_counter in these tests


def counted(seconds):
    """{name: candidate taking that long on the test's clock} and the {name: calls} they
    count into."""
    calls = {name: 0 for name in seconds}

    def candidate(name):
        def run():
            calls[name] += 1
            CLOCK.now += seconds[name]

        return run

    return {name: candidate(name) for name in seconds}, calls


def cache_file():
    return method_cache.cache_path(method_cache.machine_key())


def test_the_fastest_is_measured_then_read_back(capsys):
    candidates, calls = counted({"slow": 0.05, "fast": 0.002})
    assert method_cache.choose("toy", (3, "a"), candidates, "slow") == ("fast", "measured")
    # A warm-up call each, then rounds; after the first, the slow one (more than
    # SLOW_RATIO x the best) is dropped, and one left is the winner.
    assert calls == {"slow": 2, "fast": 2}
    candidates, calls = counted({"a": 0.02, "b": 0.021, "c": 0.2})
    assert method_cache.choose("toy", (3, "b"), candidates, "c")[0] in ("a", "b")
    assert calls["c"] == 2 and calls["a"] == calls["b"] == 1 + method_cache.REPEATS
    stored = json.loads(open(cache_file()).read())
    assert stored["machine"] == method_cache.machine_key()
    entry = stored["entries"]['toy:[3,"a"]']
    assert entry["method"] == "fast"
    assert entry["seconds"]["fast"] < entry["seconds"]["slow"]

    candidates, calls = counted({"slow": 0.05, "fast": 0.002})
    assert method_cache.choose("toy", (3, "a"), candidates, "slow") == ("fast", "cache")
    assert calls == {"slow": 0, "fast": 0}
    assert capsys.readouterr().err == ""


def test_another_machine_key_measures_again(monkeypatch):
    candidates, calls = counted({"a": 0.001, "b": 0.03})
    assert method_cache.choose("toy", (1,), candidates, "b") == ("a", "measured")
    assert method_cache.choose("toy", (1,), candidates, "b", device="gpu:x")[1] == "measured"
    with monkeypatch.context() as m:
        m.setattr(method_cache, "cpu_flags", lambda: frozenset({"sse2"}))
        assert method_cache.choose("toy", (1,), candidates, "b")[1] == "measured"
    with monkeypatch.context() as m:
        m.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
        assert method_cache.choose("toy", (1,), candidates, "b")[1] == "measured"
    with monkeypatch.context() as m:
        m.setenv("TF_NUM_INTRAOP_THREADS", "7")
        m.setattr(method_cache.backend_of_keras, "name", lambda: "jax")
        assert method_cache.choose("toy", (1,), candidates, "b")[1] == "measured"
    assert len(os.listdir(os.path.dirname(cache_file()))) == 2 * 5  # a file and its lock each
    # The first machine's entry is still there.
    assert method_cache.choose("toy", (1,), counted({"a": 0, "b": 0})[0], "b") == ("a", "cache")


@pytest.mark.parametrize(
    "content",
    ["{not json", "\xff\xfe garbage", "[]", '{"format": 99, "entries": {}}', ""],
    ids=["broken", "binary", "list", "format", "empty"],
)
def test_a_corrupt_file_is_measured_again_with_one_note(content, capsys):
    path = cache_file()
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="latin-1") as f:
        f.write(content)
    candidates, _ = counted({"a": 0.001, "b": 0.03})
    assert method_cache.choose("toy", (2,), candidates, "b") == ("a", "measured")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: {path}: ") and "measuring again" in err[0]
    data = json.loads(open(path).read())
    assert data["format"] == method_cache.FORMAT and data["entries"]["toy:[2]"]["method"] == "a"
    # Valid now: read back without a note.
    assert method_cache.choose("toy", (2,), candidates, "b") == ("a", "cache")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "entry, why",
    [
        ({"method": "gone", "seconds": {"gone": 0.001, "a": 0.1}}, "not a candidate any more"),
        ({"method": "a", "seconds": {"a": 0.001}}, "new candidates b"),
        ({"method": 3}, "malformed entry"),
        ("loop", "malformed entry"),
    ],
)
def test_a_stale_entry_is_measured_again_with_one_note(entry, why, capsys):
    machine = method_cache.machine_key()
    path = cache_file()
    other = {"method": "x", "seconds": {"x": 1.0}}
    data = {"format": 1, "machine": machine, "entries": {"toy:[4]": entry, "toy:[5]": other}}
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        json.dump(data, f)
    candidates, calls = counted({"a": 0.03, "b": 0.001})
    assert method_cache.choose("toy", (4,), candidates, "a") == ("b", "measured")
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("note: ") and why in line and "toy:[4]" in line
    entries = json.loads(open(path).read())["entries"]
    assert entries["toy:[4]"]["method"] == "b" and entries["toy:[5]"] == other


def test_measuring_off_returns_the_default_without_running_anything(monkeypatch):
    candidates, calls = counted({"a": 0.001, "b": 0.001})
    monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "0")
    assert method_cache.choose("toy", (6,), candidates, "b") == ("b", method_cache.OFF)
    monkeypatch.delenv(method_cache.MEASURE_VARIABLE)
    method_cache.set_measuring(False)  # a command-line flag's way
    assert method_cache.choose("toy", (6,), candidates, "b") == ("b", method_cache.OFF)
    assert calls == {"a": 0, "b": 0}
    assert not os.path.exists(cache_file())
    method_cache.set_measuring(None)
    assert method_cache.choose("toy", (6,), candidates, "b")[1] == "measured"
    # A family may default to off; the variable or the flag still decides.
    assert not method_cache.measuring_enabled(default=False)
    monkeypatch.setenv(method_cache.MEASURE_VARIABLE, "1")
    assert method_cache.measuring_enabled(default=False)
    method_cache.set_measuring(False)
    assert not method_cache.measuring_enabled(default=True)


def test_a_spent_budget_returns_the_default(monkeypatch):
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "0")
    candidates, calls = counted({"a": 0.001, "b": 0.001})
    assert method_cache.choose("toy", (7,), candidates, "a") == ("a", method_cache.SPENT)
    assert calls == {"a": 0, "b": 0}
    # A measurement started finishes, the budget overrun; the next one is not started.
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "0.01")
    candidates, calls = counted({"a": 0.02, "b": 0.001})
    assert method_cache.choose("toy", (8,), candidates, "a") == ("b", "measured")
    assert method_cache.spent_seconds() >= 0.02
    assert method_cache.choose("toy", (12,), candidates, "a") == ("a", method_cache.SPENT)
    assert sum(calls.values()) == 4
    # A cache hit costs no budget.
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "60")
    method_cache.choose("toy", (9,), counted({"a": 0.001, "b": 0.03})[0], "b")
    monkeypatch.setenv(method_cache.BUDGET_VARIABLE, "0")
    assert method_cache.choose("toy", (9,), candidates, "b") == ("a", "cache")


def test_a_failing_candidate_is_left_out_with_a_note(capsys):
    def broken():
        raise RuntimeError("out of memory\nmore")

    candidates, _ = counted({"a": 0.001})
    assert method_cache.choose("toy", (10,), {**candidates, "bad": broken}, "bad") == (
        "a",
        "measured",
    )
    [line] = capsys.readouterr().err.splitlines()
    assert line == "note: bad failed while being measured (RuntimeError: out of memory)"
    assert method_cache.choose("toy", (11,), {"x": broken, "y": broken}, "x") == (
        "x",
        method_cache.FAILED,
    )


def test_bad_arguments_are_bugs():
    with pytest.raises(ValueError, match="candidates"):
        method_cache.choose("toy", (1,), {}, "a")
    with pytest.raises(ValueError, match="shape_key"):
        method_cache.choose("toy", (1.5,), {"a": int, "b": int}, "a")
    assert method_cache.choose("toy", (1,), {"only": int}, "x") == ("only", method_cache.ONLY)


def test_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(method_cache.CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert method_cache.cache_dir() == str(tmp_path / "xdg" / "dygan_tf")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert method_cache.cache_dir() == str(tmp_path / "home" / ".cache" / "dygan_tf")


def test_the_machine_key():
    key = method_cache.machine_key()
    assert key["backend"] == "tensorflow" and key["library"].startswith("tensorflow 2.")
    assert {"cpu_kind", "cpu_flags_sha256", "threads", "device", "onednn"} <= set(key)
    assert method_cache.cache_path(key) != method_cache.cache_path(
        method_cache.machine_key("gpu:x")
    )


WRITER = textwrap.dedent(
    """
    import sys, time
    from dygan_tf.utils import method_cache
    name, count, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))
    for i in range(count):
        method_cache.choose("toy", (name, i), {"a": lambda: None, "b": lambda: None}, "a")
    assert "tensorflow" not in sys.modules
    """
)


@pytest.mark.slow
def test_processes_writing_at_once_lose_nothing(cache):
    env = dict(os.environ, PYTHONPATH=REPO, DYGAN_CACHE_DIR=str(cache))
    names, count = ("p0", "p1", "p2", "p3"), 15
    for round_ in range(3):
        start = time.time() + 1.5  # every writer starts then, after its imports
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, f"{name}r{round_}", str(count), str(start)],
                env=env,
                cwd=REPO,
            )
            for name in names
        ]
        assert [w.wait(timeout=60) for w in writers] == [0] * len(names)
    [path] = [p for p in os.listdir(cache / "methods") if p.endswith(".json")]
    entries = json.loads((cache / "methods" / path).read_text())["entries"]
    expected = {
        f'toy:["{name}r{round_}",{i}]'
        for name in names
        for round_ in range(3)
        for i in range(count)
    }
    assert set(entries) == expected


@pytest.mark.slow
def test_imports_without_tensorflow():
    code = (
        "import sys\n"
        "import dygan_tf.utils.method_cache as m\n"
        "m.machine_key()\n"
        "bad = {'tensorflow', 'jax', 'torch', 'keras'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
