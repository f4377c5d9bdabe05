"""Precision of the networks: the Keras dtype policy of a `--mixed-precision` setting,
and a context that builds layers under it without leaving it set globally.
"""

import keras

from dygan_tf.config.run_config import PRECISION_POLICIES
from dygan_tf.utils.errors import UserError


def precision_policy(mixed_precision):
    """The Keras dtype policy name for a precision in `config.PRECISIONS`."""
    if mixed_precision not in PRECISION_POLICIES:
        raise UserError(f"{mixed_precision!r}: expected one of {', '.join(PRECISION_POLICIES)}")
    return PRECISION_POLICIES[mixed_precision]


class dtype_policy:
    """Context manager: layers built inside use `policy`; the global policy is restored."""

    def __init__(self, policy):
        self.policy = policy

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.policy)

    def __exit__(self, *exc):
        keras.config.set_dtype_policy(self.previous)
