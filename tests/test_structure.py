"""How the package is put together: no import cycles, every module imports on its own,
one home for each file name, and `import dygan_tf` registers the Keras objects."""

import ast
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, one_error_line, run_cli_reporting_tensorflow

PACKAGES = ("dygan_tf", "data_prep", "tuning", "benchmarks")


def _modules():
    """{module name: path} of every module of the project's packages, subpackages
    included (walked recursively)."""
    found = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            parts = os.path.relpath(folder, REPO).split(os.sep)
            for name in sorted(files):
                if name.endswith(".py"):
                    module = ".".join(parts + ([] if name == "__init__.py" else [name[:-3]]))
                    found[module] = os.path.join(folder, name)
    return found


def _imports(path, known):
    """Project modules that the file at `path` imports, anywhere in it (lazy imports in
    functions count too: a cycle through them is still two modules needing each other)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    modules = _modules()
    # `import dygan_tf` (the package) only registers Keras objects and sets the version;
    # modules that import it for that are not part of a cycle.
    graph = {m: _imports(p, modules) - {"dygan_tf", m} for m, p in modules.items()}
    graph["dygan_tf"] = _imports(modules["dygan_tf"], modules) - {"dygan_tf"}
    assert "dygan_tf.fit" not in graph["dygan_tf.evaluate"]
    assert "dygan_tf.evaluate" not in graph["dygan_tf.fit"]
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_layers_and_models_import_no_room_above_them():
    # The networks and their step are a library of their own: they validate with
    # utils.image_metrics, not with the evaluation room, and know no training run.
    modules = _modules()
    for name, path in modules.items():
        if name.startswith(("dygan_tf.models.", "dygan_tf.layers.")):
            above = {
                m
                for m in _imports(path, modules)
                if m.startswith(("dygan_tf.evaluation", "dygan_tf.training", "dygan_tf.inference"))
            }
            assert not above, f"{name} imports {sorted(above)}"


def _room(module):
    """The room a module belongs to: `dygan_tf.<subpackage>`, or the command package
    (`dygan_tf` for its top-level command modules, `data_prep`, `tuning`, `benchmarks`)."""
    parts = module.split(".")
    if parts[0] == "dygan_tf" and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] == "dygan_tf" and len(parts) == 2 and os.path.isdir(os.path.join(REPO, *parts)):
        return module  # a subpackage's __init__
    return parts[0]


def _library_rooms():
    return sorted(
        f"dygan_tf.{name}"
        for name in os.listdir(os.path.join(REPO, "dygan_tf"))
        if os.path.isfile(os.path.join(REPO, "dygan_tf", name, "__init__.py"))
    )


def test_no_import_cycle_between_rooms():
    """The subpackages form layers: no room needs another that needs it back (lazy
    imports count), and no library room imports a command package or command module."""
    modules = _modules()
    rooms = {}
    for module, path in modules.items():
        room = _room(module)
        rooms.setdefault(room, set()).update(
            _room(m) for m in _imports(path, modules) - {"dygan_tf"} if _room(m) != room
        )
    cycle = _cycle(rooms)
    assert cycle is None, f"import cycle between rooms: {' -> '.join(cycle)}"
    commands = {"dygan_tf", "data_prep", "tuning", "benchmarks"}
    for room in _library_rooms():
        assert not rooms[room] & commands, f"{room} imports {sorted(rooms[room] & commands)}"


def test_every_room_says_what_it_is_for():
    rooms = _library_rooms()
    assert {"dygan_tf.layers", "dygan_tf.models", "dygan_tf.data"} <= set(rooms)
    for room in rooms + ["data_prep", "tuning", "benchmarks"]:
        init = os.path.join(REPO, *room.split("."), "__init__.py")
        doc = ast.get_docstring(ast.parse(open(init, encoding="utf-8").read()))
        assert doc and len(doc.split()) >= 5, f"{init}: no docstring saying what the room holds"


def test_command_packages_hold_commands_only():
    """The top level of dygan_tf, data_prep and tuning holds commands: each module has a
    `main` and runs it as `python -m`; the library lives in the subpackages."""
    for module, path in _modules().items():
        parts = module.split(".")
        top_level = len(parts) == 2 and parts[0] in ("dygan_tf", "data_prep", "tuning")
        if not top_level or os.path.basename(path) == "__init__.py":
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "main" in functions, f"{path}: a command module without main()"
        assert "__name__" in open(path, encoding="utf-8").read(), path
        assert not [n for n in tree.body if isinstance(n, ast.ClassDef)], f"{path}: a class"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


_IMPORT_EACH_ALONE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in {packages!r}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first, with no other project module loaded before it."""
    code = _IMPORT_EACH_ALONE.format(packages=set(PACKAGES))
    result = subprocess.run(
        [sys.executable, "-c", code, *_modules()],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_run_folder_and_manifest_names_live_in_one_module():
    names = ('"config.json"', '"generator.keras"', '"history.csv"', '"run.json"', '"pix2pix3.json"')
    owners = {"dygan_tf.run_folder.files": names, "dygan_tf.data.manifest": ('"manifest.json"',)}
    for module, path in _modules().items():
        text = open(path, encoding="utf-8").read()
        for owner, spelled in owners.items():
            if module != owner:
                hits = [n for n in spelled if n in text]
                assert not hits, f"{path} spells {hits}; use {owner}"


_LOAD_WITH_THE_PACKAGE = """
import sys
import numpy as np
{imports}
import keras
generator = keras.saving.load_model(sys.argv[1])  # safe mode (the default)
image = np.zeros((2,) + tuple(generator.input["image"].shape[1:]), "float32")
task = np.zeros((2, 12), "float32")
task[:, 9] = 1
out = generator({"image": image, "task": task})
assert out.shape == image.shape and np.isfinite(np.asarray(out)).all()
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "imports",
    [
        "import dygan_tf",  # README's order: registered when Keras loads
        "import dygan_tf\nimport tensorflow",  # TensorFlow loads Keras on its own
        "import keras\nimport dygan_tf",  # Keras already loaded: registered at once
    ],
)
def test_import_dygan_tf_registers_its_keras_objects(run_dir, tmp_path, imports):
    """What README shows: `import dygan_tf` then `keras.saving.load_model` of a
    generator.keras, from a folder outside the repo, whatever was imported first."""
    code = _LOAD_WITH_THE_PACKAGE.replace("{imports}", imports)
    result = subprocess.run(
        [sys.executable, "-c", code, str(run_dir / "generator.keras")],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


@pytest.mark.parametrize(
    "module, args, expected",
    [
        ("dygan_tf.fit", ["--data", "{missing}", "--out", "{out}"], "--data"),
        ("dygan_tf.evaluate", ["--run", "{missing}", "--out", "{out}"], "--run"),
        (
            "dygan_tf.evaluate",
            ["--run", "{records}", "--compare", "{missing}", "--out", "{out}"],
            "--compare",
        ),
        (
            "dygan_tf.evaluate",
            ["--model", "{missing}", "--data", "{records}", "--out", "{out}"],
            "--model",
        ),
        ("tuning.search_lambda", ["--data", "{missing}", "--out", "{out}"], "--data"),
        ("data_prep.build_tfrecords", ["--verify", "{missing}"], "--verify"),
    ],
)
def test_path_errors_come_before_tensorflow_starts(tfrecord_dir, tmp_path, module, args, expected):
    """A missing folder is reported in a fraction of a second: the command stops before
    its TensorFlow start-up (several seconds), and writes nothing."""
    values = dict(missing=tmp_path / "missing", out=tmp_path / "out", records=tfrecord_dir)
    result, imported = run_cli_reporting_tensorflow(module, *[a.format(**values) for a in args])
    assert one_error_line(result).startswith(f"error: {expected} ")
    assert not imported and not (tmp_path / "out").exists()
