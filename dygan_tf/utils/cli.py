"""What every command shares: argument parsing whose errors are one line, `run_main`
(a `UserError` becomes one `error:` line and exit code 2; anything else is a bug and
still raises) and a quiet TensorFlow import.
"""

import argparse
import os
import sys
import tempfile

from dygan_tf.utils.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one `UserError` line instead of usage text."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def run_main(main, argv=None):
    """Runs `main(argv)`; a UserError becomes one line on stderr and exit code 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def import_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up log lines (CUDA probing) swallowed:
    they ignore TF_CPP_MIN_LOG_LEVEL and would break one-line error reports. If the
    import fails, the captured lines are replayed."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf
