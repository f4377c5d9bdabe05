"""dygan_tf.utils.progress: keras.utils.Progbar on a terminal, plain periodic lines elsewhere.
(Commands writing through it into pipes: test_translate.py and test_data_cli.py.)"""

import io
import re
import sys

import keras
import pytest

from dygan_tf.utils.progress import Progress

PLAIN_LINE = re.compile(r"^(\d+)/(\d+) (case|slice)s \((\d+)%\) \d+\.\ds$")
RATE_LINE = re.compile(r"^(\d+) (case|slice)s in \d+\.\ds \(\d+\.\d\d (case|slice)/s\)$")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("total, step", [(20, 1), (155, 8), (3, 1), (7, 7)])
def test_not_a_terminal_gets_plain_lines_at_each_tenth(total, step):
    stream = io.StringIO()
    bar = Progress(total, unit="slice", stream=stream)
    done = 0
    while done < total:
        n = min(step, total - done)
        bar.add(n)
        done += n
    rate = bar.close()
    text = stream.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\b" not in text
    *lines, last = text.splitlines()
    assert RATE_LINE.match(last) and last.startswith(f"{total} slices") and rate > 0
    parsed = [PLAIN_LINE.match(line) for line in lines]
    assert all(parsed), lines
    counts = [int(m[1]) for m in parsed]
    percents = [int(m[4]) for m in parsed]
    assert all(int(m[2]) == total for m in parsed)
    assert counts == sorted(set(counts)) and counts[-1] == total and percents[-1] == 100
    # One line per tenth crossed: at most 10, and no more than the updates made.
    assert len(lines) == min(10, -(-total // step))


def test_disabled_prints_nothing_and_still_measures():
    stream = io.StringIO()
    bar = Progress(4, stream=stream, enabled=False)
    for _ in range(4):
        bar.add()
    assert bar.close() > 0 and stream.getvalue() == "" and bar.done == 4


def test_a_terminal_gets_the_keras_progbar(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    bar = Progress(5, unit="case")
    for _ in range(5):
        bar.add()
    assert isinstance(bar._bar, keras.utils.Progbar) and bar._bar.unit_name == "case"
    bar.close()
    text = terminal.getvalue()
    assert "5/5" in text and RATE_LINE.match(text.splitlines()[-1])
    assert not PLAIN_LINE.search(text)


def test_a_terminal_other_than_stdout_gets_plain_lines():
    stream = _Terminal()  # Progbar writes to stdout only
    bar = Progress(2, unit="case", stream=stream)
    bar.add(2)
    assert bar._bar is None and PLAIN_LINE.match(stream.getvalue().splitlines()[0])


def test_negative_total_is_refused():
    with pytest.raises(ValueError, match="total=-1"):
        Progress(-1)
