"""MR physics of phantom v2: published relaxation values per compartment, the clinical
ranges of the sequence parameters, and the signal equations that turn one into images.

Every number the v2 phantom draws is in `TISSUES`, `TUMOUR`, `GADOLINIUM` or
`SEQUENCES`, each with its source; docs/results/benchmark-v2.md prints the same table
(`table_markdown`). Times in ms, PD relative to CSF's.
"""

import numpy as np

from dygan_tf.utils import markdown

# Healthy tissue, (PD, T1, T2) per field strength.
# 1.5 T: BrainWeb's simulator tissue parameters (Kwan, Evans & Pike, IEEE TMI 18(11),
# 1999; Collins et al., IEEE TMI 17(3), 1998; Cocosco et al., NeuroImage 5(4), 1997).
# 3 T: Stanisz et al., MRM 54(3):507, 2005 (WM, GM, blood T1/T2; its 1.5 T blood too);
# PD at 3 T kept from BrainWeb (PD does not depend on the field). CSF's T1 at 3 T:
# ~4.3 s, as measured in vivo across 0.2-7 T (Rooney et al., MRM 57(2):308, 2007;
# BrainWeb's 2569 ms, kept at 1.5 T, sits below GM's 1820 ms of 3 T's table otherwise).
TISSUES = {
    "csf": {1.5: (1.00, 2569.0, 329.0), 3.0: (1.00, 4300.0, 329.0)},
    "gm": {1.5: (0.86, 833.0, 83.0), 3.0: (0.86, 1820.0, 99.0)},
    "wm": {1.5: (0.77, 500.0, 70.0), 3.0: (0.77, 1084.0, 69.0)},
    "blood": {1.5: (0.90, 1441.0, 290.0), 3.0: (0.90, 1932.0, 275.0)},
}
TISSUE_SOURCES = {
    "csf": "BrainWeb (Kwan 1999; Collins 1998) at 1.5 T; T1 Rooney 2007, T2 BrainWeb's at 3 T",
    "gm": "BrainWeb (1.5 T); Stanisz 2005 (3 T)",
    "wm": "BrainWeb (1.5 T); Stanisz 2005 (3 T)",
    "blood": "Stanisz 2005 (1.5 T and 3 T); PD ours",
}
# Per-case spread of the healthy PD, T1 and T2 (ours): a log-normal factor shared by
# every tissue (SD 10 %: published tables differ by more than that, e.g. BrainWeb's
# against Stanisz's) times one per tissue (SD 5 %: within one subject the tissues'
# ratios vary less). Each value's total per-case SD: 11 %.
CASE_COMMON_SD, CASE_TISSUE_SD = 0.10, 0.05
CASE_SD = float(np.hypot(CASE_COMMON_SD, CASE_TISSUE_SD))

# Tumour compartments, (PD, T1, T2) as factors of another compartment of the same case,
# each a uniform range (ours: no one relaxometry paper covers all four; the ranges give
# what glioma imaging shows: oedema long T1 and T2, bright on T2 and FLAIR; necrosis
# near CSF; viable, enhancing tumour near oedema before contrast, which is why T2 does
# not reveal it). Relative values keep the field's scale. Drawn in this order.
TUMOUR = {
    "oedema": ("wm", (1.15, 1.25), (1.6, 2.2), (1.9, 2.6)),
    "enhancing": ("oedema", (0.97, 1.03), (0.8, 1.05), (0.89, 0.95)),
    "non_enhancing": ("oedema", (0.95, 1.05), (0.9, 1.1), (0.85, 1.15)),
    "necrosis": ("csf", (0.90, 0.98), (0.5, 0.8), (0.4, 0.8)),
}
# Voxel-level texture of a tumour compartment: log-normal SD of a smooth random field
# (ours), on PD, T1 and T2 independently.
TEXTURE_SD = 0.12

# Gadolinium (gadopentetate, 0.1 mmol/kg): relaxivities in plasma, L/(mmol s), at
# 37 C (Rohrer et al., Invest Radiol 40(11):715, 2005); concentrations in mmol/L (ours:
# a few minutes after a standard dose blood holds ~0.5-1.5 mM, enhancing tumour a
# fraction of it).
GADOLINIUM = {
    "r1": {1.5: 4.1, 3.0: 3.7},
    "r2": {1.5: 4.6, 3.0: 5.2},
    "blood_mM": (0.5, 1.5),
    "enhancing_mM": (0.15, 0.6),
}

# Sequence parameters drawn per case, uniform in these clinical ranges (ours, from
# common 1.5 T / 3 T brain-tumour protocols; BraTS's scans come from many such).
SEQUENCES = {
    "t1_se": {"TR": (400.0, 650.0), "TE": (8.0, 15.0)},
    "t1_gre": {"TR": (15.0, 30.0), "TE": (2.5, 5.0), "flip": (20.0, 35.0)},
    "t2_fse": {"TR": (3000.0, 6000.0), "TE": (80.0, 120.0)},
    "flair": {"TR": (8000.0, 11000.0), "TE": (90.0, 140.0), "TI_vs_null": (0.95, 1.05)},
}
# T2* for the spoiled gradient echo: a fixed share of T2 (ours; at TE <= 5 ms it
# changes the T1-weighted signal by a few percent at most).
T2STAR_OF_T2 = 0.6
# Flow voids: the share of a vessel's signal left in the spin-echo sequences (T2 FSE and
# FLAIR), where flowing blood leaves the slice between the pulses (ours).
FLOW_VOID = (0.05, 0.3)


def spin_echo(pd, t1, t2, tr, te):
    """S = PD (1 - exp(-TR/T1)) exp(-TE/T2); also fast spin echo at its effective TE."""
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def spoiled_gre(pd, t1, t2, tr, te, flip_deg):
    """S = PD sin a (1 - E1) / (1 - cos a E1) exp(-TE/T2*), E1 = exp(-TR/T1)."""
    a = np.deg2rad(flip_deg)
    e1 = np.exp(-tr / t1)
    return pd * np.sin(a) * (1.0 - e1) / (1.0 - np.cos(a) * e1) * np.exp(-te / (T2STAR_OF_T2 * t2))


def inversion_recovery(pd, t1, t2, tr, te, ti):
    """S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2) (magnitude FLAIR)."""
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def null_ti(t1, tr):
    """The inversion time that nulls a tissue of `t1`: T1 ln(2 / (1 + exp(-TR/T1)));
    ln(2) T1 for TR >> T1."""
    return t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1)))


def with_gadolinium(t1, t2, concentration, field):
    """(T1, T2) shortened by gadolinium: 1/T = 1/T0 + r C (r in 1/(mM s), T in ms)."""
    r1, r2 = GADOLINIUM["r1"][field], GADOLINIUM["r2"][field]
    return (
        1.0 / (1.0 / t1 + r1 * concentration / 1000.0),
        1.0 / (1.0 / t2 + r2 * concentration / 1000.0),
    )


def signal(sequence, pd, t1, t2):
    """The signal of `sequence` (a dict from `draw_sequences`) at these parameters."""
    kind = sequence["kind"]
    if kind == "t1_se" or kind == "t2_fse":
        return spin_echo(pd, t1, t2, sequence["TR"], sequence["TE"])
    if kind == "t1_gre":
        return spoiled_gre(pd, t1, t2, sequence["TR"], sequence["TE"], sequence["flip"])
    if kind == "flair":
        return inversion_recovery(pd, t1, t2, sequence["TR"], sequence["TE"], sequence["TI"])
    raise ValueError(f"unknown sequence kind. Received: kind={kind!r}")


def draw_tissues(rng, field):
    """{tissue: (PD, T1, T2)} of one case: the table's values at `field` times a
    log-normal factor per parameter shared by the tissues and one per tissue."""
    common = np.exp(CASE_COMMON_SD * rng.standard_normal(3))
    return {
        name: tuple(
            float(v * c * np.exp(CASE_TISSUE_SD * rng.standard_normal()))
            for v, c in zip(values[field], common, strict=True)
        )
        for name, values in TISSUES.items()
    }


def draw_tumour(rng, tissues):
    """{compartment: (PD, T1, T2)} of one case's tumour, relative to its tissues or to
    a compartment drawn before."""
    out = {}
    for name, (base, *ranges) in TUMOUR.items():
        values = out[base] if base in out else tissues[base]
        out[name] = tuple(float(v * rng.uniform(*r)) for v, r in zip(values, ranges, strict=True))
    return out


def draw_sequences(rng, tissues):
    """{modality: sequence dict} of one case. T1 and T1CE share one sequence (pre- and
    post-contrast with one protocol, as clinics acquire them), spin echo or spoiled GRE;
    FLAIR's TI is near the null of this case's CSF at its TR (a protocol tuned to
    suppress CSF; the residual is the drawn `TI_vs_null`)."""

    def draw(kind):
        return {"kind": kind} | {k: float(rng.uniform(*r)) for k, r in SEQUENCES[kind].items()}

    t1 = draw("t1_se" if rng.random() < 0.5 else "t1_gre")
    flair = draw("flair")
    flair["TI"] = float(null_ti(tissues["csf"][1], flair["TR"]) * flair.pop("TI_vs_null"))
    return {"t1": t1, "t1ce": dict(t1), "t2": draw("t2_fse"), "flair": flair}


def table_rows():
    """(parameter, value, per-case range, source) rows of everything drawn."""
    rows = []
    for name, by_field in TISSUES.items():
        for field, (pd, t1, t2) in by_field.items():
            rows.append(
                (
                    f"{name} PD / T1 / T2 at {field:g} T",
                    f"{pd:g} / {t1:g} ms / {t2:g} ms",
                    f"x log-normal, SD {CASE_SD:.0%} ({CASE_COMMON_SD:.0%} shared)",
                    TISSUE_SOURCES[name],
                )
            )
    for name, (base, *ranges) in TUMOUR.items():
        span = " / ".join(f"{lo:g}-{hi:g}" for lo, hi in ranges)
        rows.append(
            (
                f"{name} PD / T1 / T2",
                f"x the case's {base}",
                f"{span}; texture SD {TEXTURE_SD:.0%}",
                "ours (see TUMOUR)",
            )
        )
    for field in (1.5, 3.0):
        rows.append(
            (
                f"Gd r1 / r2 at {field:g} T",
                f"{GADOLINIUM['r1'][field]} / {GADOLINIUM['r2'][field]} /(mM s)",
                "fixed",
                "Rohrer 2005",
            )
        )
    for key in ("blood_mM", "enhancing_mM"):
        lo, hi = GADOLINIUM[key]
        rows.append((f"Gd in {key.split('_')[0]}", "uniform", f"{lo:g}-{hi:g} mM", "ours"))
    for kind, params in SEQUENCES.items():
        for key, (lo, hi) in params.items():
            rows.append((f"{kind} {key}", "uniform", f"{lo:g}-{hi:g}", "ours (clinical range)"))
    rows.append(("flow void (T2, FLAIR)", "uniform", f"{FLOW_VOID[0]:g}-{FLOW_VOID[1]:g}", "ours"))
    return rows


def table_markdown():
    """The table of `table_rows` as markdown."""
    return markdown.table(("parameter", "value", "per case", "source"), table_rows())
