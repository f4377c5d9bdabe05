"""results.md of the paper tables: each table's rows, the claims' paired differences and
verdicts, the demo on each backend and the paper's motivation, from `summary.build`'s
results."""

from dygan_tf.experiments import paired, tables
from dygan_tf.experiments.tables import ABOUT, TEST_SET_NAMES, TEST_SETS


def _md_value(stat, digits=2):
    if stat["mean"] is None:
        return "—"
    if stat["sd"] is None:
        return f"{stat['mean']:.{digits}f} (n = 1)"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _md_diff(d):
    if d["n"] == 0:
        return "—"
    if d["ci"] is None:
        return f"{d['mean']:+.2f} (n = 1)"
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _md_welch(d):
    if d["mean"] is None:
        return "—"
    if d["ci"] is None:
        return f"{d['mean']:+.2f} (n = {d['n_a']} vs {d['n_b']})"
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _claim_verdict(entries, test_set):
    verdicts = [e[test_set]["verdict"] for e in entries]
    if all(v == paired.HOLDS for v in verdicts):
        return paired.HOLDS
    if all(v == paired.REVERSED for v in verdicts):
        return paired.REVERSED
    held = sum(v == paired.HOLDS for v in verdicts)
    reversed_ = sum(v == paired.REVERSED for v in verdicts)
    unresolved = len(verdicts) - held - reversed_
    if held == reversed_ == 0:
        return paired.NO_RUNS if all(v == paired.NO_RUNS for v in verdicts) else paired.NOT_RESOLVED
    parts = [f"{held} holds", f"{reversed_} reversed", f"{unresolved} not resolved"]
    return "mixed: " + ", ".join(p for p in parts if not p.startswith("0 "))


def to_markdown(results):
    """results.md: the header, each table's rows, the claims' verdicts, the demo on each
    backend and the paper's motivation, in that order."""
    sections = (_md_header, _md_tables, _md_claims, _md_backends, _md_motivation)
    return "\n".join(line for section in sections for line in section(results))


def _md_header(results):
    return [
        f"**{ABOUT}**",
        "",
        "Written by `python -m dygan_tf.experiments.paper_tables` from the records in "
        "`runs/` beside this file; see [../paper-tables.md](../paper-tables.md) for the "
        "reading of each row.",
        "",
        f"- commits of the runs: {', '.join(results['commits']) or '—'}",
        f"- machines: {'; '.join(results['machines']) or '—'}",
        f"- runs recorded: {results['runs']}",
        "",
    ]


def _md_tables(results):
    """Each paper table's rows: PSNR mean ± SD over seeds, the paper's in brackets."""
    lines, rows = [], results["rows"]
    for table in tables.TABLES:
        table_rows = [r for r in tables.rows_of((table,)) if r.id in rows]
        if not table_rows:
            continue
        targets = [t for t in tables.TARGETS if any(t in r.targets for r in table_rows)]
        lines += [f"## Table {table}: PSNR (dB), mean ± SD over seeds; the paper's in brackets", ""]
        for test_set in TEST_SETS:
            lines += [f"On {TEST_SET_NAMES[test_set]}:", ""]
            lines.append("| row | seeds | " + " | ".join(t.upper() for t in targets) + " |")
            lines.append("|---|---|" + "---|" * len(targets))
            for r in table_rows:
                per = rows[r.id][test_set]
                n = max((per[t]["psnr"]["n"] for t in r.targets), default=0)
                cells = [
                    f"{_md_value(per[t]['psnr'])} [{r.paper_psnr[t]:.2f}]" if t in per else ""
                    for t in targets
                ]
                lines.append(f"| {r.label} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _md_claims(results):
    """The claims' paired differences, their verdicts and the seed spread."""
    lines = [
        "## Claims: paired differences (same seed), PSNR dB, with 95 % t intervals",
        "",
        "A claim holds where the interval is above 0, is reversed where it is below 0 and "
        "is not resolved where it contains 0; ± is the interval's half-width, the smallest "
        "mean difference these seeds could resolve.",
        "",
        "| claim | pair | target | paper Δ | Δ, 7 demo cases | verdict "
        "| Δ, 40 held-out cases | verdict | resolvable (held-out) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for claim in results["claims"]:
        for e in claim["pairs"]:
            pair = f"{tables.ROW_BY_ID[e['better']].label} − {tables.ROW_BY_ID[e['worse']].label}"
            half = e["heldout"]["half_width"]
            lines.append(
                f"| {claim['claim']} | {pair} | {e['target'].upper()} | {e['paper_diff']:+.2f} | "
                f"{_md_diff(e['demo'])} | {e['demo']['verdict']} | {_md_diff(e['heldout'])} | "
                f"{e['heldout']['verdict']} | {'—' if half is None else f'± {half:.2f}'} |"
            )
    lines += [
        "",
        "| claim | verdict (7 demo cases) | verdict (40 held-out cases) |",
        "|---|---|---|",
    ]
    for claim in results["claims"]:
        lines.append(
            f"| {claim['claim']}. {claim['text']} | {_claim_verdict(claim['pairs'], 'demo')} | "
            f"{_claim_verdict(claim['pairs'], 'heldout')} |"
        )
    spread = results["seed_sd"]
    lines += [
        "",
        "Seed SD of PSNR (dB), the mean over rows of each row's SD: "
        + "; ".join(
            f"{TEST_SET_NAMES[s]}: "
            + ", ".join(f"{t.upper()} {v:.2f}" for t, v in spread[s].items() if v is not None)
            for s in TEST_SETS
        ),
        "",
    ]
    return lines


def _md_backends(results):
    """The demo row on each Keras backend against TensorFlow's (Welch intervals)."""
    rows = results["rows"]
    backend_rows = [r for r in tables.rows_of((tables.BACKENDS,)) if r.id in rows]
    if len(backend_rows) <= 1:
        return []
    lines = [
        "## The demo on each Keras backend (Ms_DyGAN; not the paper's)",
        "",
        "PSNR (dB), mean ± SD over seeds. The same `--seed` draws other initial weights "
        "on each backend, so JAX and PyTorch are compared with TensorFlow as independent "
        "samples: the difference of means with Welch's 95 % interval.",
        "",
    ]
    for test_set in TEST_SETS:
        lines += [f"On {TEST_SET_NAMES[test_set]}:", ""]
        lines.append("| backend | seeds | FLAIR | T1 | T1CE |")
        lines.append("|---|---|---|---|---|")
        for r in backend_rows:
            per = rows[r.id][test_set]
            n = max(per[t]["psnr"]["n"] for t in r.targets)
            cells = [_md_value(per[t]["psnr"]) for t in tables.TARGETS]
            lines.append(f"| {r.label} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "| backend − TensorFlow | target | Δ, 7 demo cases | verdict | Δ, 40 held-out "
        "cases | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for e in results["backends"]:
        lines.append(
            f"| {tables.ROW_BY_ID[e['row']].label} | {e['target'].upper()} | "
            f"{_md_welch(e['demo'])} | {e['demo']['verdict']} | "
            f"{_md_welch(e['heldout'])} | {e['heldout']['verdict']} |"
        )
    lines.append("")
    return lines


def _md_motivation(results):
    """One DyGAN against three pix2pix models: parameters and times."""
    if not results["motivation"]:
        return []
    lines = [
        "## One DyGAN against three pix2pix models (Table 2's runs, means over seeds)",
        "",
        "| model | G parameters | D parameters | training wall time (s) | inference per case (s) |",
        "|---|---|---|---|---|",
    ]
    for row_id, m in results["motivation"].items():
        lines.append(
            f"| {tables.ROW_BY_ID[row_id].label} | {m['generator_parameters']:,} | "
            f"{m['discriminator_parameters']:,} | {m['train_wall_s_mean']:.0f} | "
            f"{m['inference_s_per_case_mean']:.3f} |"
        )
    lines.append("")
    return lines
