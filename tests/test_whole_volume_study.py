"""research.whole_volume on the tests' phantom: each modality of a case removed in turn,
completed by a multi-source model (every one) and by the paper's T2 model (all but T2),
scored beside the baselines, with times; a model and set already recorded is skipped."""

import json
import os

from dygan_tf.config.run_config import get_preset
from dygan_tf.data.cases import discover_cases
from tests.helpers import save_untrained_run


def test_each_modality_removed_in_turn_completed_and_scored(
    phantom_root, tfrecord_dir, run_dir, tmp_path, capsys
):
    from research import whole_volume

    multi = get_preset("tiny").override(
        inputs="multi", source="any", targets=("flair", "t1", "t1ce", "t2")
    )
    (tmp_path / "multi").mkdir()
    multi_dir = save_untrained_run(tmp_path / "multi", multi)
    out, work = tmp_path / "records", tmp_path / "work"
    argv = [
        "--model", f"multi_seed0={multi_dir}", "--model", f"paper_seed0={run_dir}",
        "--test-set", f"tiny={phantom_root}", "--cases", "1", "--baselines", "multi_seed0",
        "--lut-from", str(tfrecord_dir), "--work", str(work), "--out", str(out),
    ]  # fmt: skip
    whole_volume.main(argv)
    first = min(c["case_id"] for c in discover_cases(str(phantom_root)))
    for label, targets in (
        ("multi_seed0", ["flair", "t1", "t1ce", "t2"]),
        ("paper_seed0", ["flair", "t1", "t1ce"]),
    ):
        folder = out / label / "tiny"
        summary = json.loads((folder / "summary.json").read_text())
        timing = json.loads((folder / "timing.json").read_text())
        assert sorted(summary["targets"]) == targets
        assert [(r["case_id"], r["target"]) for r in summary["volumes"]] == [
            (timing["cases"][0], t) for t in targets
        ]
        assert timing["cases"] == [first]
        for m in targets:
            assert timing["passes"][m]["cases"] == 1 and timing["passes"][m]["seconds"] > 0
        assert "through_plane_excess" in summary["volumes"][0]
        # The baselines once, with the model that completes every modality.
        assert bool(summary["baselines"]) is (label == "multi_seed0")
    assert timing["passes"]["t2"] == {"skipped": "paper_seed0 was not trained to synthesise t2"}
    lut = json.loads((out / "multi_seed0" / "tiny" / "summary.json").read_text())["lut"]
    assert lut["fitted"] and lut["scored_so_left_out"] == 1  # the same root: never fitted on it
    # Inputs are links to the real files, the scored modality left out.
    case = timing["cases"][0]
    links = sorted(os.listdir(work / "inputs" / "tiny" / "without_t1" / case))
    assert links == sorted(f for f in links if "_t1." not in f) and len(links) == 3
    capsys.readouterr()
    whole_volume.main(argv)
    assert capsys.readouterr().out.count("skipped") == 2
    # --table: rows by label and seed, the baselines beside them, the time per case.
    whole_volume.main(["--table", "--out", str(out)])
    table = json.loads((tmp_path / "table.json").read_text())["tiny"]
    assert sorted(table["rows"]) == ["multi", "paper"]
    flair = table["rows"]["multi"]["flair"]["psnr_brain"]
    assert flair["seeds"] == [0] and flair["values"] == [
        json.loads((out / "multi_seed0" / "tiny" / "summary.json").read_text())["targets"]["flair"][
            "psnr_brain"
        ]["mean"]
    ]
    seconds = table["rows"]["multi"]["_time"]["per_case_s"]["values"][0]
    assert seconds == sum(
        p["per_case_s"]
        for p in json.loads((out / "multi_seed0" / "tiny" / "timing.json").read_text())[
            "passes"
        ].values()
    )
    assert seconds > 0
    assert set(table["baselines"]["t2"]) == {"copy_source", "intensity_lut"}
    lut = table["baselines"]["flair"]["intensity_lut"]["psnr_brain"]
    assert table["margin_over_lut"]["multi"]["flair"] == {"0": flair["values"][0] - lut}
    assert "| flair | multi | 0 |" in (tmp_path / "table.md").read_text()
