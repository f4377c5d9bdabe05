"""What every command shares: argument parsing whose errors are one line and whose
`--help` shows each flag's default, the runner (`run_main`, and `command` for the
installed commands: a `UserError` becomes one `error:` line and exit code 2; anything
else is a bug and still raises) and a quiet console. The flag types and the flags
several commands share are in `dygan_tf.config.flags`.

A quiet console: TensorFlow's native start-up lines (absl, oneDNN, cudart, written while
`tensorflow` is imported, whatever TF_CPP_MIN_LOG_LEVEL says) are swallowed, and on a
machine without an NVIDIA device file its C++ log is off (TF_CPP_MIN_LOG_LEVEL=3: the
`failed call to cuInit` line comes after start-up, when the first op runs). A user's own
TF_CPP_MIN_LOG_LEVEL wins; every command's `--verbose` shows everything.
"""

import argparse
import contextlib
import functools
import glob
import importlib.abc
import importlib.util
import inspect
import os
import re
import sys
import tempfile

from dygan_tf.utils.errors import UserError

VERBOSE_FLAG = "--verbose"
# TensorFlow's start-up lines: absl's note before its log is set up, INFO and WARNING
# lines in absl's format (I0000 00:00:17... port.cc:153] oneDNN ...), and the second
# line of the CPU-feature note.
_START_UP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]"
    r"|To enable the following instructions: )"
)


class _HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to a flag's help unless the default is None/False or the
    help already says what happens without the flag."""

    def add_argument(self, action):
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and "default" not in (action.help or "")
            and action.help != argparse.SUPPRESS
        ):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            shown = str(shown).replace("%", "%%")
            action = _with_help(action, f"{action.help or ''} (default: {shown})".strip())
        super().add_argument(action)


def _with_help(action, text):
    import copy

    action = copy.copy(action)
    action.help = text
    return action


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one `UserError` line instead of usage text,
    shows defaults in `--help` and takes `--verbose` (TensorFlow's log lines shown)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument(
            VERBOSE_FLAG,
            action="store_true",
            help="show TensorFlow's start-up and C++ log lines (hidden by default)",
        )

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def keywords_of(function, args):
    """The parsed flags (`args`) that `function` (or a dataclass) takes, by parameter
    name: a command's library call whose parameters are named after the command's flags.
    The runner's own `--verbose` (TensorFlow's log lines) is never handed down."""
    names = set(inspect.signature(function).parameters) - {"verbose"}
    return {name: value for name, value in vars(args).items() if name in names}


def command(main):
    """The installed command of `main(argv)` (pyproject.toml's [project.scripts] and
    `python -m`): `main` run by `run_main`."""
    return functools.partial(run_main, main)


def run_main(main, argv=None):
    """Runs `main(argv)` with a quiet console (unless `--verbose`) and every message on
    a line of its own; a UserError becomes one line on stderr and exit code 2."""
    from dygan_tf.utils import progress

    quiet_console(VERBOSE_FLAG in (sys.argv[1:] if argv is None else argv))
    try:
        with progress.messages_on_their_own_line():  # none glued to a progress bar
            code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def has_nvidia_device():
    """Whether an NVIDIA device file exists (/dev/nvidia0, /dev/nvidiactl, ...)."""
    return bool(glob.glob("/dev/nvidia*"))


def quiet_console(verbose=False):
    """Before TensorFlow starts: its start-up lines swallowed when it is imported, and
    its C++ log off where no GPU can be (see the module docstring)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if has_nvidia_device() else "3")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextlib.contextmanager
def _start_up_lines_swallowed():
    """File descriptor 2 into a temporary file for the block; afterwards the lines that
    are not TensorFlow start-up chatter are written out (all of them if it failed)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            kept = [
                line
                for line in text.splitlines(keepends=True)
                if failed or not _START_UP_LINE.match(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the normal finders and runs its import with the start-up
    lines swallowed, wherever it is first imported (Keras, tf.data, a command's own
    import); then steps out of the way."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        with _start_up_lines_swallowed():
            self.loader.exec_module(module)


def import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up log lines (CUDA probing) swallowed:
    they ignore TF_CPP_MIN_LOG_LEVEL and would break one-line error reports. If the
    import fails, the captured lines are replayed."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _start_up_lines_swallowed():
        import tensorflow as tf
    return tf
