"""README's headline results are written from the committed records
(`research.readme_results`): the block in README.md is exactly what the records give,
verdicts are shown as the statistics decided them, and no tumour SSIM is a headline."""

import json
import shutil

from research import readme_results
from tests.helpers import REPO


def test_readme_results_block_is_what_the_committed_records_give():
    assert readme_results.main(["--root", REPO, "--check"]) == 0


def _results(verdict):
    d = {"n": 5, "mean": 1.5, "ci": [0.5, 2.5], "p_holm": 0.01, "verdict": verdict}
    pair = {"better": "t2_dygan", "worse": "t2_pix2pix3_paper", "paper_diff": 0.4}
    claim = {"name": "1", "text": "one DyGAN beats three pix2pix models"}
    claim["pairs"] = [
        dict(pair, target="flair", test_mni=d, test_colin27=dict(d, verdict="not resolved")),
        dict(pair, target="t1", test_mni=dict(d, verdict="not resolved"), test_colin27=d),
    ]
    return {
        "benchmark": "v2",
        "test_sets": ["test_mni", "test_colin27"],
        "runs": 10,
        "claims": [claim],
    }


def test_rendered_rows_show_resolved_comparisons_and_count_the_rest(tmp_path):
    (tmp_path / "docs" / "results" / "paper-tables-v2").mkdir(parents=True)
    path = tmp_path / readme_results.PAPER_TABLES["v2"]
    path.write_text(json.dumps(_results("reversed")))
    block = readme_results.render(str(tmp_path))
    row = next(line for line in block.splitlines() if line.startswith("| v2 |"))
    assert "`test_mni`: FLAIR **reversed**, +1.50 [+0.50, +2.50] dB, Holm p 0.010" in row
    assert "1 more not resolved (5 seeds)" in row
    assert "`test_colin27`: T1 **reversed**" in row
    assert "tumour" not in block.lower() and "ssim_tumor" not in block
    # no demo record: no demo table; the block still parses back into a README
    assert "demo preset" not in block
    readme = tmp_path / "README.md"
    shutil.copy(f"{REPO}/README.md", readme)
    assert readme_results.main(["--root", str(tmp_path)]) == 0
    assert block in readme.read_text()
    assert readme_results.main(["--root", str(tmp_path), "--check"]) == 0
