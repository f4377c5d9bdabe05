"""The human-readable summary of a `benchmarks.run` result: one line per figure, with
its target and whether it was met."""


def _train_row(train, key, label):
    t, peak = train[key], train[key]["dygan"]["fraction_of_matmul_peak"]
    return (
        f"{label}: DyGAN {t['dygan']['achieved_gflops_per_s']:.3g} vs pix2pix "
        f"{t['pix2pix']['achieved_gflops_per_s']:.3g} GFLOP/s = {t['flop_rate_ratio']:.2f}"
        + (f" ({peak:.0%} of peak)" if peak else "")
        + f"; step {t['dygan']['step_seconds_median']:.3g} vs "
        f"{t['pix2pix']['step_seconds_median']:.3g} s",
        f">= {t['target']}",
        t["met"],
    )


_ROWS = {
    "machine": lambda m: [
        (
            f"{m['cpu_model']}, {m['cpu_count']} cores, "
            + " ".join(f for f, on in m["cpu_flags"].items() if on),
            "",
            None,
        )
    ],
    "matmul_peak": lambda m: [
        (
            f"n={m['n']}: fp32 {m['float32']['gflops_per_s']:.1f}, bf16 "
            f"{m['bfloat16']['gflops_per_s']:.1f} GFLOP/s",
            "",
            None,
        )
    ],
    "dyconv_vs_conv": lambda d: [
        (
            f"DyConv/Conv2D time {d['geometric_mean_ratio']:.3f} "
            f"(geometric mean of {len(d['shapes'])} shapes)",
            f"<= {d['target']}",
            d["met"],
        )
    ],
    "train_step_vs_pix2pix": lambda t: [
        _train_row(t, "float32", "fp32"),
        _train_row(t, "mixed_bfloat16", "bf16"),
    ],
    "prep_vs_load": lambda p: [
        (
            f"shard build {p['prep_vs_load']['build_cases_per_s']:.2f} vs "
            f"NIfTI load {p['prep_vs_load']['load_cases_per_s']:.2f} "
            f"cases/s = {p['ratio']:.2f}",
            f">= {p['target']}",
            p["met"],
        )
    ],
    "pipeline": lambda p: [
        (
            f"tf.data {p['tfdata_slices_per_s']:.1f} vs train "
            f"{p['train_step_slices_per_s']:.2f} slices/s = {p['ratio']:.1f}",
            f">= {p['target']:g}",
            p["met"],
        )
    ],
    "inference": lambda i: [
        (
            f"volume {i['volume']['slices_per_s']:.1f} slices/s; batch-3 "
            "SavedModel call "
            f"{i['latency_batch3']['savedmodel_signature_s'] * 1e3:.1f} ms",
            "",
            None,
        )
    ],
}


def table(results, sections):
    """The human-readable summary: one line per figure, `sections` (names) in order."""
    lines = [f"{'section':<22} {'figure':<84} {'target':<8} {'met':<4} seconds"]
    for name in sections:
        value = results.get(name)
        if value is None:
            continue
        if "error" in value:
            rows = [(f"ERROR {value['error']}"[:84], "", None)]
        elif "skipped" in value:
            rows = [(f"skipped: {value['skipped']}", "", None)]
        else:
            try:
                rows = _ROWS.get(name, lambda v: [("measured", "", None)])(value)
            except (KeyError, TypeError) as e:  # the JSON is written already; say, don't die
                rows = [(f"(no summary: missing {e})", "", None)]
        for i, (figure, target, met) in enumerate(rows):
            seconds = f"{value['seconds']:.1f}" if i == 0 and "seconds" in value else ""
            met = "" if met is None else ("yes" if met else "NO")
            lines.append(
                f"{name if i == 0 else '':<22} {figure:<84} {target:<8} {met:<4} {seconds}".rstrip()
            )
    return "\n".join(lines)
