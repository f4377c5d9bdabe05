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
    (-1.0, 2.267, 'within the seed spread')
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


# --- Tests that survive scrutiny: one claim on one test set of one benchmark is a family
# of comparisons (claims 1-3: 3 targets; claim 4: 6; claim 5: 4).

ALPHA = 0.05
POWER = 0.8
MAX_SEEDS = 1000  # "> 1000" beyond
BOOTSTRAP_DRAWS = 10_000


def paired_t_p(diffs):
    """Two-sided p of the paired t test that the mean of `diffs` is 0 (None below 2)."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    sd = float(np.std(d, ddof=1))
    if sd == 0:
        return 1.0 if float(d.mean()) == 0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(d.size))
    return float(2 * stats.t.sf(abs(t), d.size - 1))


def holm(p_values):
    """Holm's step-down adjusted p-values, in the order given (None stays None).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m, out, running = len(present), list(p_values), 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def sign_flip_p(diffs, direction=1):
    """One-sided exact sign-flip p that the mean of `diffs` is 0 against the
    alternative that it is above 0 (`direction` 1) or below 0 (-1): the share of the
    2^n sign patterns of |d| whose mean is at least as far in that direction as the
    observed one. With n seeds it cannot go below 2^-n.

    >>> sign_flip_p([1.0, 2.0, 3.0])
    0.125
    >>> sign_flip_p([1.0, -2.0, 3.0, 4.0, 5.0])  # 3 of 32 patterns: +-1, +-2 flipped
    0.09375
    """
    import itertools

    d = np.asarray(diffs, dtype=float) * direction
    if d.size == 0:
        return None
    observed = d.mean()
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    means = (signs * np.abs(d)).mean(axis=1)
    return float(np.mean(means >= observed - 1e-12))


def seeds_for_power(sd, gap, family_size, power=POWER, alpha=ALPHA):
    """Seeds a paired t test needs to find a true mean difference `gap` with `power`
    at two-sided level alpha / family_size, with the differences' SD `sd` (noncentral
    t); None where sd or gap is unknown or 0, MAX_SEEDS + 1 beyond MAX_SEEDS.

    >>> seeds_for_power(1.0, 1.0, 1)
    10
    """
    from scipy import stats

    if not sd or not gap:
        return None
    level = alpha / family_size
    effect = abs(gap) / sd
    for n in range(2, MAX_SEEDS + 1):
        critical = stats.t.ppf(1 - level / 2, n - 1)
        ncp = effect * math.sqrt(n)
        reached = stats.nct.sf(critical, n - 1, ncp) + stats.nct.cdf(-critical, n - 1, ncp)
        if reached >= power:
            return n
    return MAX_SEEDS + 1


def case_bootstrap(a_cases, b_cases, level=0.95, draws=BOOTSTRAP_DRAWS, seed=0):
    """Percentile interval of the mean difference A − B resampling seeds and test cases
    (both with replacement): `a_cases` and `b_cases` are {seed: {case: value}}; only
    seeds and cases both have count. None below two seeds or two cases."""
    seeds = sorted(set(a_cases) & set(b_cases))
    if len(seeds) < 2:
        return None
    cases = sorted(set.intersection(*(set(a_cases[s]) & set(b_cases[s]) for s in seeds)))
    if len(cases) < 2:
        return None
    d = np.array([[a_cases[s][c] - b_cases[s][c] for c in cases] for s in seeds])
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(seeds), (draws, len(seeds)))
    cols = rng.integers(0, len(cases), (draws, len(cases)))
    means = np.array([d[r][:, c].mean() for r, c in zip(rows, cols)])
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def compare(a, b, paper_gap=None):
    """`paired_difference` of a − b plus the paired-t p, both one-sided sign-flip p's
    (in the claimed direction, a above b, and the other way); the family's Holm p, the
    verdict and the seeds for power are added by `judge_family`."""
    out = paired_difference(a, b)
    diffs = [a[s] - b[s] for s in out["seeds"]]
    out["p_t"] = paired_t_p(diffs)
    out["p_sign_flip"] = sign_flip_p(diffs, 1)
    out["p_sign_flip_reversed"] = sign_flip_p(diffs, -1)
    out["paper_gap"] = paper_gap
    return out


def judge_family(entries, alpha=ALPHA):
    """Adds "p_holm", "verdict" and "seeds_for_power" to each `compare` result of one
    family, in place. Holds: Holm-adjusted p < alpha and the one-sided sign-flip p in
    the claimed direction < alpha; reversed: likewise the other way; otherwise not
    resolved (with the seeds that 80 % power at the paper's gap would take)."""
    adjusted = holm([e["p_t"] for e in entries])
    for e, p in zip(entries, adjusted):
        e["p_holm"] = p
        e["seeds_for_power"] = seeds_for_power(e["sd"], e.get("paper_gap"), len(entries))
        if e["n"] == 0:
            e["verdict"] = NO_RUNS
        elif p is not None and p < alpha and e["mean"] > 0 and e["p_sign_flip"] < alpha:
            e["verdict"] = HOLDS
        elif p is not None and p < alpha and e["mean"] < 0 and e["p_sign_flip_reversed"] < alpha:
            e["verdict"] = REVERSED
        else:
            e["verdict"] = NOT_RESOLVED
    return entries
