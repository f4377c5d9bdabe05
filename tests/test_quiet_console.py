"""A quiet console: no TensorFlow start-up lines on a machine without a GPU (`--verbose`
shows them), no message glued to a progress bar, progress lines in a log file."""

import glob
import io
import os
import subprocess
import sys

import pytest

from dygan_tf.utils import progress
from tests import helpers

NOISE = ("cuInit", "absl", "oneDNN", "cudart", "I0000", "E0000", "W0000")


def _run_fresh(module, *args):
    """`python -m module args` as a user runs it: TensorFlow's log level not set."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=helpers.REPO,
        env=dict(env, PYTHONPATH=helpers.REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_shows_the_installed_name_and_defaults_and_nothing_on_stderr():
    result = _run_fresh("dygan_tf.translate", "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("usage: dygan-translate")
    assert "(default: 4)" in result.stdout and "--verbose" in result.stdout


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia*")), reason="a GPU machine logs its devices")
def test_cpu_translate_prints_no_tensorflow_start_up_lines(
    savedmodel_dir, run_dir, phantom_root, tmp_path
):
    folder, cid = helpers.case_folder(phantom_root)
    source = os.path.join(folder, f"{cid}_t2.nii.gz")
    result = _run_fresh(
        "dygan_tf.translate", "--model", savedmodel_dir, "--input", source,
        "--out-dir", tmp_path / "out", "--batch", 16, "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout.startswith("wrote ") and "_flair_synth.nii.gz" in result.stdout
    # --verbose shows them (export: TensorFlow starts and runs ops).
    verbose = _run_fresh(
        "dygan_tf.export", "--run", run_dir, "--out", tmp_path / "m" / "1", "--verbose"
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "cuInit" in verbose.stderr and "I0000" in verbose.stderr, verbose.stderr


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_message_never_joins_a_progress_bar(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.messages_on_their_own_line():
        bar = progress.Progress(10, unit="case")
        bar.add(3)
        print("failed: case 4", file=sys.stderr)
        bar.add(7)
        print("done")
    text = terminal.getvalue()
    assert "\nfailed: case 4\n" in text and "\ndone\n" in text, repr(text)
    assert "casefailed" not in text and "]failed" not in text


def test_fit_progress_in_a_log_every_interval_and_at_each_epoch_end(capsys):
    from dygan_tf.training.callbacks import FitProgress

    logs = {"d_loss": 0.5, "g_gan_loss": 1.0, "g_l1_loss": 2.0, "g_loss": 50.75}
    callback = FitProgress(epochs=2, steps=3, every_s=0)
    for epoch in range(2):
        callback.on_epoch_begin(epoch)
        for step in range(3):
            callback.on_train_batch_end(step, logs)
        callback.on_epoch_end(epoch, logs)
        print(f"epoch {epoch + 1}: val PSNR flair 20.00 dB")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch 1/2: step 1/3, d_loss 0.5,") and "ETA" in lines[0]
    assert lines[2].startswith("epoch 1/2: 3 steps in ") and lines[2].endswith("g_loss 50.75")
    assert lines[3] == "epoch 1: val PSNR flair 20.00 dB"
    assert len(lines) == 8
