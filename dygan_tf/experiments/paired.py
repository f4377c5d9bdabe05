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


WITHIN_SPREAD, APART = "within the seed spread", "apart"


def independent_difference(a, b, level=0.95):
    """{"n_a", "n_b", "mean", "ci", "half_width", "verdict"} of mean(a) − mean(b) for
    unpaired samples (Welch's t interval): "within the seed spread" where the interval
    contains 0, "apart" where it does not. Below two values on either side there is no
    interval.

    >>> d = independent_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    >>> d["mean"], round(d["half_width"], 4), d["verdict"]
    (-1.0, 2.2671, 'within the seed spread')
    """
    a, b = np.asarray(list(a), dtype=float), np.asarray(list(b), dtype=float)
    out = {"n_a": int(a.size), "n_b": int(b.size), "mean": None, "ci": None}
    out.update(half_width=None, verdict=NO_RUNS if not (a.size and b.size) else NOT_RESOLVED)
    if not (a.size and b.size):
        return out
    out["mean"] = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return out
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        out.update(ci=[out["mean"], out["mean"]], half_width=0.0)
        out["verdict"] = WITHIN_SPREAD if out["mean"] == 0 else APART
        return out
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    out["ci"], out["half_width"] = [out["mean"] - half, out["mean"] + half], half
    out["verdict"] = WITHIN_SPREAD if out["ci"][0] <= 0 <= out["ci"][1] else APART
    return out
