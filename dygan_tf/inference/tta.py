"""Test-time augmentation (ours; off unless asked for with `--tta flip`).

"flip": a model's output is the mean of its output on the slice and, mirrored back,
its output on the left-right mirrored slice. Slices are axial in canonical RAS with the
patient's left-right along the image width (`preprocessing.to_slice`: the columns are
the volume's x axis), and a brain is nearly symmetric about its midline, so the mirror
image is one more plausible input of the same anatomy; averaging the two answers halves
what a model makes up differently on either side (measured in README, "Any case").
The mirror is the width axis of (B, H, W, C) images; the condition (task code, or
availability and target) is the same for both halves.

Both halves go through one model call with the batch doubled: the generator's
instance norm and dynamic kernels act per example, so each half gets exactly what a
call on it alone would give (tested), at twice the work of one call.
"""

import numpy as np

TTA_MODES = ("none", "flip")
WIDTH_AXIS = 2  # of (B, H, W, C): the patient's left-right


def describe(mode):
    """One phrase for reports: what `mode` does."""
    if mode == "none":
        return "none"
    return "mean of the output and the mirrored output of the left-right mirrored slice"


def label(mode, sep=", "):
    """What a name or message adds for `mode`: "" for "none", else `sep` + "flip TTA"."""
    return "" if mode == "none" else f"{sep}{mode} TTA"


def check_mode(mode):
    """`mode` itself; ValueError for anything not in TTA_MODES."""
    if mode not in TTA_MODES:
        raise ValueError(f"test-time augmentation: expected one of {TTA_MODES}. Received: {mode!r}")
    return mode


def flip_averaged(call):
    """`call(image, condition, *per_row)` -> numpy images, made flip-averaged.

    `image` (B, H, W, C) and `condition` (B, N) are numpy arrays; each of `per_row`
    (such as the rows' target names) is a sequence of B items, repeated for the mirrored
    half. The wrapped call returns float32 numpy images (B, H, W, C_out).
    """

    def averaged(image, condition, *per_row):
        image = np.asarray(image, np.float32)
        condition = np.asarray(condition, np.float32)
        n = len(image)
        doubled = [list(items) * 2 for items in per_row]
        both = np.asarray(
            call(
                np.concatenate([image, np.flip(image, WIDTH_AXIS)]),
                np.concatenate([condition, condition]),
                *doubled,
            ),
            np.float32,
        )
        return (both[:n] + np.flip(both[n:], WIDTH_AXIS)) / 2

    return averaged


def flip_averaged_graph(call):
    """The same mean in `keras.ops`, inside a graph (the export's serving function):
    `call(image, condition)` on tensors with a dynamic batch."""
    from keras import ops

    def averaged(image, condition):
        both = call(
            ops.concatenate([image, ops.flip(image, WIDTH_AXIS)], 0),
            ops.concatenate([condition, condition], 0),
        )
        plain, mirrored = ops.split(both, 2, axis=0)
        return (plain + ops.flip(mirrored, WIDTH_AXIS)) / 2

    return averaged


def with_tta(call, mode):
    """`call` itself for "none", else its flip-averaged version (numpy)."""
    return call if check_mode(mode) == "none" else flip_averaged(call)
