"""Paired comparisons over seeds: the mean difference, its 95 % t interval and a verdict.

Runs of one seed share that seed (initial weights, shuffles, validation cases), so two
rows are compared seed by seed: d_s = A_s − B_s. With n seeds the interval is
mean(d) ± t(0.975, n − 1) · sd(d) / √n. A claim that A beats B

- holds where the whole interval is above 0,
- is reversed where it is below 0,
- is not resolved where it contains 0. The interval's half-width is the smallest mean
  difference these seeds could resolve.
"""

import math

import numpy as np

HOLDS, REVERSED, NOT_RESOLVED = "holds", "reversed", "not resolved"
NO_RUNS = "no runs yet"


def t_quantile(p, df):
    """Student's t quantile (scipy's)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def mean_sd(values):
    """(mean, sample SD with n − 1, n); SD is None below two values."""
    values = np.asarray(values, dtype=float)
    n = int(values.size)
    if n == 0:
        return None, None, 0
    sd = float(np.std(values, ddof=1)) if n > 1 else None
    return float(np.mean(values)), sd, n


def paired_difference(a, b, level=0.95):
    """{"n", "mean", "sd", "ci", "half_width", "verdict"} of a − b over paired seeds.

    `a` and `b` are {seed: value}; only seeds both have count. Below two pairs there is
    no interval and the verdict is "not resolved".

    >>> d = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.0, 2: 1.5})
    >>> d["mean"], round(d["half_width"], 4), d["verdict"]
    (1.0, 1.2421, 'not resolved')
    """
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd, n = mean_sd(diffs)
    out = {"seeds": seeds, "n": n, "mean": mean, "sd": sd, "ci": None, "half_width": None}
    if n < 2:
        out["verdict"] = NOT_RESOLVED if n else NO_RUNS
        return out
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    out["ci"], out["half_width"] = [low, high], half
    out["verdict"] = HOLDS if low > 0 else REVERSED if high < 0 else NOT_RESOLVED
    return out
