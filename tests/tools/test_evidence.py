"""tools/evidence.py end to end on a miniature budget: data, pretraining, two variants on the stack
and control datasets, a RESULTS-like markdown with the table; a rerun reuses the finished runs."""
import json
import os
import subprocess
import sys

import pytest

from tests.tools.tool_test_utils import TOOLS_DIR

from polar_rcnn.evaluation.report import format_mean_std, paired_differences, verdict
from tools import evidence


def _unregister_evidence_datasets():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in [n for n in DatasetCatalog.list() if n.startswith("evidence_")]:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture(autouse=True)
def _fresh_evidence_datasets():
    """Each test starts like a new process: no ``evidence_*`` names left by another test."""
    _unregister_evidence_datasets()
    yield
    _unregister_evidence_datasets()


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

    # the output folder moved (or another checkout): its runs are still the same runs
    moved = [str(tmp_path / "moved") if a == str(tmp_path / "ev") else a for a in argv]
    os.rename(tmp_path / "ev", tmp_path / "moved")
    _unregister_evidence_datasets()  # a second invocation is a new process; here, one process
    assert evidence.main(moved) == 0
    assert capsys.readouterr().out.count("reused") == 5
    os.rename(tmp_path / "moved", tmp_path / "ev")
    _unregister_evidence_datasets()

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
    library = evidence.default_branch_opts()
    assert branch[branch.index("MODEL.POLAR.INPUT_STRIDE") + 1] == library[library.index("MODEL.POLAR.INPUT_STRIDE") + 1]
    assert "MODEL.POLAR.POST_KERNEL_SIZE" not in ev.run_opts("rgb_only", "stack", "0")
    assert "MODEL.POLAR.POST_KERNEL_SIZE" not in ev.run_opts("early_fusion", "stack", "0")


def test_report_sections_replace_only_their_own():
    legacy = "# Results: does the stack help?\n\nold main\n"
    text = evidence.replace_section(legacy, "scratch", "# From scratch\n\nfirst")
    assert "old main" in text and "first" in text
    assert text.index("old main") < text.index("first")  # the old report became section "main"
    text = evidence.replace_section(text, "scratch", "# From scratch\n\nsecond")
    assert "first" not in text and "second" in text and "old main" in text
    text = evidence.replace_section(text, "main", "# Results\n\nnew main")
    assert "old main" not in text and "new main" in text and "second" in text
    assert text.index("new main") < text.index("second")  # replaced in place
    assert evidence.replace_section("", "main", "body") == "\n".join(evidence._markers("main")).replace(
        "\n", "\nbody\n") + "\n"


def test_unpaired_dataset_gives_every_image_another_videos_stack(tmp_path):
    ev = evidence.Evidence(evidence.parse_args(["--output", str(tmp_path)]))
    source = tmp_path / "data" / "rgb"
    source.mkdir(parents=True)
    (source / "generator.json").write_text("{}")
    for split in ("train", "val"):
        images = [{"id": 10 * v + f, "file_name": f"v{v}_f{f}.png", "stack_file": f"v{v}_f{f}.npy", "video_id": v,
                   "frame_id": f} for v in (1, 0) for f in range(3)]  # not in (video, frame) order
        (source / f"{split}.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    ev.write_unpaired("unpaired")
    for split in ("train", "val"):
        images = json.loads((tmp_path / "data" / "unpaired" / f"{split}.json").read_text())["images"]
        pairs = {im["file_name"]: im["stack_file"] for im in images}
        assert pairs["v0_f0.png"] == "v1_f0.npy" and pairs["v1_f2.png"] == "v0_f2.npy"
        assert sorted(pairs.values()) == sorted(f"v{v}_f{f}.npy" for v in (0, 1) for f in range(3))
    entries = ev.dataset_entries("unpaired")
    assert entries[0][1].endswith("unpaired/train.json") and entries[0][2].endswith("rgb/train/images")


def test_scratch_preset_and_which_branch_each_variant_runs(tmp_path):
    args = evidence.parse_args(["--preset", "scratch", "--output", str(tmp_path), "--seeds", "0"])
    assert args.variants == ["rgb_scratch", "demo_random_init", "polar_scratch", "demo_dropout", "polar_dropout"]
    assert args.section == "scratch" and args.val_videos == 24
    assert args.datasets == ["stack", "unpaired"] and args.seeds == [0] and args.jobs == 2
    assert evidence.reference_variant(args.variants) == "rgb_scratch"
    ev = evidence.Evidence(args)
    library = evidence.default_branch_opts()
    assert "MODEL.POLAR.ZERO_INIT" in library and "MODEL.POLAR.LR_FACTOR" in library
    polar = ev.run_opts("polar_scratch", "unpaired", "0")
    assert all(x in polar for x in library)  # the library default, whatever the demo config says
    demo = ev.run_opts("demo_scratch", "unpaired", "0")
    assert not any(f"MODEL.POLAR.{key}" in demo for key in evidence.BRANCH_KEYS)  # the demo config's own branch
    for variant, zero_init, gate in (("demo_random_init", "False", "False"), ("demo_zero_init", "True", "False"),
                                     ("demo_closed_gate", "False", "True")):
        opts = ev.run_opts(variant, "unpaired", "0")
        assert opts[opts.index("MODEL.POLAR.ZERO_INIT") + 1] == zero_init
        assert opts[opts.index("MODEL.POLAR.CLOSED_GATE") + 1] == gate
        assert opts[opts.index("MODEL.POLAR.LR_FACTOR") + 1] == "1.0"  # the learning rate they were measured at
        assert not any(f"MODEL.POLAR.{key}" in opts for key in evidence.BRANCH_KEYS
                       if key not in ("ZERO_INIT", "CLOSED_GATE", "LR_FACTOR"))
        assert evidence.setup_cfg(os.path.join(evidence.CONFIGS, evidence.VARIANTS[variant].config),
                                  opts[:-2]).MODEL.POLAR.CLOSED_GATE == (gate == "True")
    assert demo[demo.index("MODEL.WEIGHTS") + 1] == "" and demo[demo.index("SOLVER.MAX_ITER") + 1] == "600"
    for variant in ("polar_dropout", "demo_dropout"):  # the variant's own value, after any library default
        opts = ev.run_opts(variant, "unpaired", "0")
        assert evidence.setup_cfg(os.path.join(evidence.CONFIGS, evidence.VARIANTS[variant].config),
                                  opts[:-2]).MODEL.POLAR.MODALITY_DROPOUT == 0.5


def test_parallel_jobs_from_the_command_line_then_reused_in_process(tmp_path):
    report = tmp_path / "RESULTS.md"
    report.write_text("# Results: does the stack help?\n\nthe main report\n")
    argv = ["--preset", "scratch", "--output", str(tmp_path / "ev"), "--results", str(report), "--seeds", "0",
            "--variants", "rgb_scratch", "demo_scratch", "--datasets", "unpaired", "--iters", "1", "--size", "48",
            "--train-videos", "2", "--val-videos", "1", "--frames-per-video", "2", "--fpn-channels", "32",
            "--fc-dim", "32"]
    done = subprocess.run([sys.executable, os.path.join(TOOLS_DIR, "evidence.py"), *argv], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = [line for line in done.stdout.splitlines() if line.startswith("[") and " AP50 " in line]
    assert "2 at a time" in done.stdout and len(trained) == 2
    text = report.read_text()
    assert "the main report" in text and "# From scratch" in text  # its own section, the other one kept
    assert "## Difference to rgb_scratch" in text and "--preset scratch" in text
    assert evidence.main(argv + ["--jobs", "1"]) == 0  # the same runs: both reused
    assert report.read_text().count("# From scratch") == 1


def test_masks_preset_reports_box_and_mask_ap(tmp_path):
    report = tmp_path / "RESULTS.md"
    argv = ["--preset", "masks", "--output", str(tmp_path / "ev"), "--results", str(report), "--seeds", "0",
            "--datasets", "stack", "--iters", "2", "--pretrain-iters", "1", "--size", "48", "--train-videos", "1",
            "--val-videos", "1", "--frames-per-video", "2", "--fpn-channels", "32", "--fc-dim", "32", "--jobs", "1"]
    args = evidence.parse_args(argv)
    assert args.variants == ["mask_rgb_only", "mask_branch_both"] and args.section == "masks"
    assert evidence.reference_variant(args.variants) == "mask_rgb_only"
    ev = evidence.Evidence(args)
    polar = ev.run_opts("mask_branch_both", "stack", "0")
    assert all(x in polar for x in evidence.default_branch_opts())  # the library default branch
    assert "MODEL.POLAR.ZERO_INIT" not in ev.run_opts("mask_rgb_only", "stack", "0")

    # its own process: this process's dataset catalog holds the other tests' evidence datasets
    done = subprocess.run([sys.executable, os.path.join(TOOLS_DIR, "evidence.py"), *argv], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    text = report.read_text()
    assert "branch_text" not in text and "-stage, hidden " in text
    assert "# Mask R-CNN" in text and "## COCO mask AP" in text and "Mask AP minus mask_rgb_only's" in text
    mask_rows = [line for line in text.split("## COCO mask AP")[1].split("##")[0].splitlines()
                 if line.startswith(("| mask_rgb_only |", "| mask_branch_both |")) and line.endswith("| 1 |")]
    assert len(mask_rows) == 2
    for row in mask_rows:  # a number in every mask metric column
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(float(c) >= 0 for c in cells[1:4])
    assert "| segm AP |" in text  # the per-run table too
    saved = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "segm/AP" in saved["results"]["mask_branch_both/stack"]["0"]


def test_leakage_preset_splits_one_trap_pool_by_frame_and_by_video(tmp_path):
    args = evidence.parse_args(["--preset", "leakage", "--output", str(tmp_path), "--seeds", "0", "--size", "32",
                                "--train-videos", "3", "--val-videos", "1", "--frames-per-video", "4"])
    assert args.datasets == ["trap_frames", "trap_videos"] and args.section == "leakage" and args.iters == 300
    ev = evidence.Evidence(args)
    ev.prepare_data()
    pool = json.loads((tmp_path / "data" / "trap" / "generator.json").read_text())
    assert pool["splits"]["train"]["video_trap"] == 0.3 and pool["splits"]["train"]["num_videos"] == 4
    videos = {}
    for name in ("trap_frames", "trap_videos"):
        entries = ev.dataset_entries(name)
        assert all(e[2].endswith(os.path.join("trap", "train", "images")) for e in entries)
        videos[name] = [{im["video_id"] for im in json.loads(open(e[1]).read())["images"]} for e in entries]
        sizes = [len(json.loads(open(e[1]).read())["images"]) for e in entries]
        assert sum(sizes) == 16 and sizes[1] == 4  # the pool's 3 : 1 video ratio, in frames too
    train, val = videos["trap_videos"]
    assert not train & val and len(val) == 1
    train, val = videos["trap_frames"]
    assert val <= train  # frames of the validation videos were trained on
    adversary = ev.run_opts("polar_adversary", "trap_videos", "0")
    assert adversary[adversary.index("MODEL.POLAR.VIDEO_ADVERSARY.WEIGHT") + 1] == "0.1"
    small = ev.run_opts("polar_small", "trap_videos", "0")
    assert small[len(small) - 1 - small[::-1].index("MODEL.POLAR.NUM_STAGES") + 1] == "1"  # after the library's


def test_regimes_preset_adds_the_partial_signal_dataset(tmp_path):
    args = evidence.parse_args(["--preset", "regimes", "--output", str(tmp_path), "--datasets", "partial",
                                "--size", "32", "--train-videos", "1", "--val-videos", "1", "--frames-per-video", "2"])
    assert args.variants == ["rgb_scratch", "demo_random_init", "polar_scratch"] and args.section == "regimes"
    evidence.Evidence(args).prepare_data()
    params = json.loads((tmp_path / "data" / "partial" / "generator.json").read_text())["splits"]["train"]
    assert params["signal"] == "stack" and params["rgb_contrast"] == 0.3


def test_opts_reach_every_run_the_pretraining_included(tmp_path):
    args = evidence.parse_args(["--output", str(tmp_path), "--opts", "INPUT.RANDOM_FLIP", "none"])
    ev = evidence.Evidence(args)
    for variant in ("rgb_only", "branch_both", "early_fusion", "rgb_scratch"):
        opts = ev.run_opts(variant, "stack", "0")
        assert opts[len(opts) - 1 - opts[::-1].index("INPUT.RANDOM_FLIP") + 1] == "none"
    _, pretrain = ev.pretrain_opts()
    assert pretrain[pretrain.index("INPUT.RANDOM_FLIP") + 1] == "none"
    assert evidence.setup_cfg(os.path.join(evidence.CONFIGS, evidence.RGB), pretrain).INPUT.RANDOM_FLIP == "none"
    assert "INPUT.RANDOM_FLIP" not in evidence.Evidence(evidence.parse_args(["--output", str(tmp_path)])).run_opts(
        "rgb_only", "stack", "0")
    with pytest.raises(SystemExit):
        evidence.parse_args(["--opts", "INPUT.RANDOM_FLIP"])


@pytest.mark.parametrize("preset", sorted(evidence.PRESETS))
def test_every_preset_parses_and_names_a_titled_section(preset, tmp_path):
    args = evidence.parse_args(["--preset", preset, "--output", str(tmp_path)])
    assert args.section in evidence.SECTION_TITLES
    assert args.variants and args.datasets


def test_grid_preset_compares_the_grid_with_full_resolution(tmp_path):
    args = evidence.parse_args(["--preset", "grid", "--output", str(tmp_path)])
    ev = evidence.Evidence(args)
    full = ev.run_opts("polar_full", "stack", "0")
    assert full[len(full) - 1 - full[::-1].index("INPUT.STACK.RESOLUTION") + 1] == "full"
    assert "INPUT.STACK.RESOLUTION" not in ev.run_opts("polar_scratch", "stack", "0")
