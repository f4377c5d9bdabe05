"""The user's cache folder of dygan_tf, one for everything kept between runs: the demo's
phantom and shards (`fit --demo --cache`), the DyConv methods measured per machine
(`methods/`) and the research tables' data sets."""

import os

VARIABLE = "DYGAN_CACHE"
# The method cache's own variable before there was one folder; still read.
OLD_VARIABLE = "DYGAN_CACHE_DIR"


def cache_root():
    """$DYGAN_CACHE, else $DYGAN_CACHE_DIR, else $XDG_CACHE_HOME/dygan_tf, else
    ~/.cache/dygan_tf."""
    for variable in (VARIABLE, OLD_VARIABLE):
        if os.environ.get(variable):
            return os.environ[variable]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "dygan_tf")
