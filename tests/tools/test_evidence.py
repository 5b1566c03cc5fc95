"""tools/evidence.py end to end on a miniature budget: data, pretraining, two variants on the stack
and control datasets, a RESULTS-like markdown with the table; a rerun reuses the finished runs."""
import json

from tool_test_utils import load_tool

from polar_rcnn.evaluation.report import format_mean_std, paired_differences, verdict

evidence = load_tool("evidence")


def test_miniature_evidence_writes_the_report_and_resumes(tmp_path, capsys, monkeypatch):
    report = tmp_path / "RESULTS.md"
    argv = ["--output", str(tmp_path / "ev"), "--results", str(report), "--seeds", "0",
            "--variants", "rgb_only", "branch_both", "--iters", "1", "--pretrain-iters", "1", "--size", "48",
            "--train-videos", "1", "--val-videos", "1", "--frames-per-video", "2", "--fpn-channels", "32",
            "--fc-dim", "32"]
    assert evidence.main(argv) == 0
    text = report.read_text()
    header = "| variant | stack AP | stack AP50 | stack AP75 | control AP | control AP50 | control AP75 | seeds |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith(("| rgb_only |", "| branch_both |"))]
    table_rows = [r for r in rows if r.endswith("| 1 |")]
    assert len(table_rows) == 2
    for row in table_rows:  # numbers in every metric column
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) >= 0 for c in cells[1:7])
    for section in ("## Setup", "## Difference to rgb_only", "## Machine and time", "## Commands", "## Every run"):
        assert section in text
    assert "tools/evidence.py --output" in text and "for SEED in 0; do" in text
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert set(saved["results"]) == {"rgb_only/stack", "branch_both/stack", "rgb_only/control", "branch_both/control"}
    assert "AP" in saved["pretrain"]

    capsys.readouterr()
    assert evidence.main(argv) == 0  # everything done: reused, same table
    assert capsys.readouterr().out.count("reused") == 5  # pretraining + 4 runs
    assert header in report.read_text()

    # a changed default (not in the options) changes the resolved config: nothing is reused
    original = evidence.setup_cfg

    def other_default(config_file, opts):
        cfg = original(config_file, opts)
        cfg.defrost()
        cfg.MODEL.POLAR.HIDDEN_CHANNELS = 8
        cfg.freeze()
        return cfg

    monkeypatch.setattr(evidence, "setup_cfg", other_default)
    assert evidence.main(argv) == 0
    assert capsys.readouterr().out.count("reused") == 0


def test_summaries_over_seeds():
    results = {("a", "d"): {0: {"AP": 10.0}, 1: {"AP": 12.0}, 2: {"AP": float("nan")}},
               ("b", "d"): {0: {"AP": 11.0}, 1: {"AP": 13.5}, 2: {"AP": 1.0}}}
    assert format_mean_std([10.0, 12.0]) == "11.0 ± 1.4"
    diffs = paired_differences(results, "b", "a", "d")
    assert diffs == [1.0, 1.5, 1.0]  # NaN (no detections) counts as AP 0
    assert verdict(diffs) == "higher on every seed"
    assert verdict([1.0, -1.0, 0.5]) == "no clear difference"
    assert verdict([-2.0, -2.5]) == "lower on every seed"
    assert verdict([1.0]) == "one seed: no spread to judge"


def test_polar_opts_reach_only_the_branch_variants(tmp_path):
    args = evidence.parse_args(["--output", str(tmp_path), "--polar-opts", "MODEL.POLAR.POST_KERNEL_SIZE", "1"])
    ev = evidence.Evidence(args)
    branch = ev.run_opts("branch_both", "stack", "0")
    last = len(branch) - 1 - branch[::-1].index("MODEL.POLAR.POST_KERNEL_SIZE")
    assert branch[last + 1] == "1"  # after the pinned library default, so it wins
    # the branch variants measure the library's default branch, whatever the demo config tunes
    assert branch[branch.index("MODEL.POLAR.INPUT_STRIDE") + 1] == str(evidence.default_branch_opts()[-1])
    assert "MODEL.POLAR.POST_KERNEL_SIZE" not in ev.run_opts("rgb_only", "stack", "0")
    assert "MODEL.POLAR.POST_KERNEL_SIZE" not in ev.run_opts("early_fusion", "stack", "0")
