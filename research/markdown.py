"""results.md of the paper tables: each table's rows, the claims' paired differences and
verdicts, the demo on each backend and the paper's motivation, from `summary.build`'s
results."""

from research import paired, tables
from research.tables import BENCHMARKS


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


def _md_p(p):
    if p is None:
        return "—"
    return f"{p:.3f}" if p >= 0.001 else "< 0.001"


def _md_seeds(n):
    if n is None:
        return "—"
    return f"> {paired.MAX_SEEDS}" if n > paired.MAX_SEEDS else str(n)


def _md_interval(ci):
    return "—" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


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
    sections = (_md_header, _md_tables, _md_claims, _md_anatomy_gap, _md_backends, _md_motivation)
    return "\n".join(line for section in sections for line in section(results))


def _md_header(results):
    return [
        f"**{results['about']}**",
        "",
        "Written by `python -m research.paper_tables` from the records in "
        "`runs/` beside this file; see [../paper-tables.md](../paper-tables.md) for the "
        "reading of each row.",
        "",
        f"- commits of the runs: {', '.join(results['commits']) or '—'}",
        f"- machines: {'; '.join(results['machines']) or '—'}",
        f"- runs recorded: {results['runs']}",
        f"- benchmark: {results['benchmark']}; test sets: "
        + "; ".join(f"`{t}`, {_names(results)[t]}" for t in results["test_sets"]),
        "",
    ]


def _names(results):
    return BENCHMARKS[results["benchmark"]].test_set_names


def _md_tables(results):
    """Each paper table's rows: PSNR mean ± SD over seeds, the paper's in brackets."""
    lines, rows = [], results["rows"]
    for table in tables.TABLES:
        table_rows = [r for r in tables.rows_of((table,)) if r.id in rows]
        if all(r.same_as for r in table_rows):  # (none, or only another table's runs)
            continue
        targets = [t for t in tables.TARGETS if any(t in r.targets for r in table_rows)]
        lines += [f"## Table {table}: PSNR (dB), mean ± SD over seeds; the paper's in brackets", ""]
        for test_set in results["test_sets"]:
            lines += [f"On `{test_set}`, {_names(results)[test_set]}:", ""]
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
    """The claims' paired differences, their tests and verdicts, and the seed spread."""
    lines = [
        "## Claims: paired differences (same seed), PSNR dB",
        "",
        "A family is one claim on one test set (claims 1-3: three targets; claim 4: six "
        "comparisons; claim 5: four). Per comparison: the mean difference with its 95 % t "
        "interval, the paired-t p, its Holm-adjusted p within the family, the one-sided "
        "exact sign-flip p in the claimed direction, and the seeds a paired t test would "
        "need for 80 % power at the paper's gap at α = 0.05 / family size. **Holds**: "
        "Holm p < 0.05 and sign-flip p < 0.05; **reversed**: likewise the other way; "
        "otherwise **not resolved**. Claim 1 is judged against the paper's 3×pix2pix "
        "(each member trained as one DyGAN run) and, as a secondary reading, against the "
        "compute-matched 3×pix2pix.",
        "",
    ]
    for test_set in results["test_sets"]:
        lines += [
            f"On `{test_set}`, {_names(results)[test_set]}:",
            "",
            "| claim | pair | target | paper Δ | Δ [95 % t] | case bootstrap | p (t) "
            "| p (Holm) | p (sign-flip) | seeds for 80 % | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for claim in results["claims"]:
            for e in claim["pairs"]:
                d = e[test_set]
                better = tables.ROW_BY_ID[e["better"]].label
                pair = f"{better} − {tables.ROW_BY_ID[e['worse']].label}"
                lines.append(
                    f"| {claim['name']} | {pair} | {e['target'].upper()} | "
                    f"{e['paper_diff']:+.2f} | {_md_diff(d)} | "
                    f"{_md_interval(d.get('case_bootstrap_ci'))} | {_md_p(d['p_t'])} | "
                    f"{_md_p(d['p_holm'])} | {_md_p(d['p_sign_flip'])} | "
                    f"{_md_seeds(d['seeds_for_power'])} | {d['verdict']} |"
                )
        lines.append("")
    lines += [
        "| claim | " + " | ".join(f"verdict, `{t}`" for t in results["test_sets"]) + " |",
        "|---|" + "---|" * len(results["test_sets"]),
    ]
    for claim in results["claims"]:
        verdicts = [_claim_verdict(claim["pairs"], t) for t in results["test_sets"]]
        lines.append(f"| {claim['name']}. {claim['text']} | " + " | ".join(verdicts) + " |")
    spread = results["seed_sd"]
    lines += [
        "",
        "Seed SD of PSNR (dB), the mean over rows of each row's SD: "
        + "; ".join(
            f"`{s}`: "
            + ", ".join(f"{t.upper()} {v:.2f}" for t, v in spread[s].items() if v is not None)
            for s in results["test_sets"]
        ),
        "",
    ]
    return lines


def _md_anatomy_gap(results):
    """Each row's PSNR on the new anatomy minus on the trained one, paired by seed."""
    gaps = results.get("anatomy_gap") or []
    if not gaps:
        return []
    same, new = results["anatomy_shift"]
    lines = [
        f"## The anatomy gap: `{new}` − `{same}`, PSNR dB (same seed), 95 % t interval",
        "",
        "| row | target | seeds | gap |",
        "|---|---|---|---|",
    ]
    for g in gaps:
        label = tables.ROW_BY_ID[g["row"]].label
        lines.append(f"| {label} | {g['target'].upper()} | {g['n']} | {_md_diff(g)} |")
    return lines + [""]


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
    for test_set in results["test_sets"]:
        lines += [f"On `{test_set}`, {_names(results)[test_set]}:", ""]
        lines.append("| backend | seeds | FLAIR | T1 | T1CE |")
        lines.append("|---|---|---|---|---|")
        for r in backend_rows:
            per = rows[r.id][test_set]
            n = max(per[t]["psnr"]["n"] for t in r.targets)
            cells = [_md_value(per[t]["psnr"]) for t in tables.TARGETS]
            lines.append(f"| {r.label} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    test_sets = results["test_sets"]
    lines += [
        "| backend − TensorFlow | target | "
        + " | ".join(f"Δ, `{t}` | verdict" for t in test_sets)
        + " |",
        "|---|---|" + "---|---|" * len(test_sets),
    ]
    for e in results["backends"]:
        cells = [f"{_md_welch(e[t])} | {e[t]['verdict']}" for t in test_sets]
        lines.append(
            f"| {tables.ROW_BY_ID[e['row']].label} | {e['target'].upper()} | "
            + " | ".join(cells)
            + " |"
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
