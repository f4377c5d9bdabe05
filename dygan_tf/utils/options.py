"""Functions that take their options as one frozen dataclass, or as its fields.

`make_dataset(dir, split, spec=None, **fields)` and `shards.build(root, out,
options=None, **fields)` accept either form; `options_of` is the one place that turns
the call into the dataclass.
"""


def options_of(cls, given, fields, caller, argument):
    """`given` (a `cls`), or the `cls` of the keywords `fields` when `given` is None.

    TypeError for both at once, or for a `given` of another type; `caller` and
    `argument` name the function and its parameter in the message.
    """
    if given is None:
        return cls(**fields)
    if fields:
        raise TypeError(
            f"{caller} takes a {cls.__name__} or its fields as keywords, not both. "
            f"Received {argument} and {sorted(fields)}"
        )
    if not isinstance(given, cls):
        raise TypeError(
            f"{caller} takes its options as a {cls.__name__} or as keywords; {argument} "
            f"must be a {cls.__name__}. Received: {argument}={given!r}"
        )
    return given
