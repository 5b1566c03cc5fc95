"""tools/benchmark.py: the quick path on tiny inputs gives a complete table with ratios to vanilla;
mapper throughput, worker memory readings and the markdown / JSON writers work. No timing
assertions: speed targets are the benchmark's report, not tests."""
import json
import re

import pytest
import torch

from polar_rcnn import analysis as B
from tools import benchmark


# a narrow R18 version of the R50 config, so a train step takes a fraction of a second
TINY = ["--depth", "18", "--sizes", "64x96", "--channels", "6", "--warmup", "1", "--iters", "1", "--threads", "1",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.POLAR.HIDDEN_CHANNELS", "8", "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "64",
        "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "64",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "INPUT.STACK.POLARIZATION", "", "INPUT.STACK.CHANNELS", "6"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_run_gives_models_mappers_and_targets(tmp_path):
    args = benchmark.parse_args(["--quick", "--mapper-workers", "0", "--mapper-samples", "3",
                                 "--worker-memory-samples", "0", "--memory", "inprocess"] + TINY)
    report = benchmark.run(args)

    rows = report["models"]
    assert [r["variant"] for r in rows] == ["vanilla", "default", "lightest"]
    for r in rows:
        assert r["size"] == "64x96" and r["batch"] == 2
        for key in ("params", "gflops", "train_s", "infer_s"):
            assert r[key] > 0, (r["variant"], key)
        assert r["peak_mb"] >= 0  # RSS above the resident: may be 0 at this size
        assert len(r["train_s_all"]) == len(r["infer_s_all"]) == 1
    vanilla, default, lightest = rows
    for key in ("params", "gflops", "train_s", "infer_s"):
        assert vanilla[f"{key}_ratio"] == 1.0
        assert default[f"{key}_ratio"] == pytest.approx(default[key] / vanilla[key])
    assert vanilla["params"] < lightest["params"] < default["params"]
    assert vanilla["gflops"] < default["gflops"]

    mappers = report["mappers"]
    assert {(r["resize"], r["mapper"], r["stack_dtype"], r["workers"]) for r in mappers} == {
        (scale, *case) for scale in (1.0, 0.8)
        for case in (("rgb", "-", 0), ("polar", "float16", 0), ("polar", "uint16", 0),
                     (B.FULL_RESOLUTION, "float16", 0), (B.FULL_RESOLUTION, "uint16", 0))}
    for r in mappers:
        rgb = next(x for x in mappers if x["mapper"] == "rgb" and x["resize"] == r["resize"])
        assert r["samples_per_s"] > 0 and r["ms_per_sample"] > 0
        assert r["ms_per_sample_ratio"] == pytest.approx(r["ms_per_sample"] / rgb["ms_per_sample"])

    targets = [t["target"] for t in report["targets"]]
    assert len(targets) == 2 * 2 + 2 * 2  # default / lightest x train / inference, 2 resizes x 2 mapper dtypes
    assert all(t["met"] in (True, False) for t in report["targets"])

    text = benchmark.to_markdown(report)
    assert "| size  | batch | variant  | params (M) |" in text
    assert text.count("| 64x96 |") == 3 + 2 * 5
    assert "## Targets" in text and "## Data mappers" in text

    md, js = benchmark.write_outputs(report, str(tmp_path / "bench.md"))
    assert md.endswith("bench.md") and js.endswith("bench.json")
    assert json.load(open(js))["models"][1]["variant"] == "default"
    assert open(md).read() == text


def test_profile_mode_lists_ops_by_extra_time():
    args = benchmark.parse_args(["--profile", "default", "--profile-iters", "1", "--top", "5"] + TINY)
    report = benchmark.run(args)
    (p,) = report["profile"]
    assert p["variant"] == "default" and set(p["train_s"]) == {"vanilla", "default"}
    assert len(p["by_op"]) == 5 and len(p["by_shape"]) == 5
    assert p["by_op"][0]["delta_ms"] >= p["by_op"][-1]["delta_ms"]
    assert p["polar_only_shapes_ms"] > 0  # e.g. the branch's convs on the stack
    assert "vanilla vs default" in benchmark.to_markdown(report)


def test_mapper_throughput_and_worker_memory(tmp_path):
    base = B.base_config(benchmark.DEFAULT_CONFIG, ["INPUT.STACK.POLARIZATION", ""], channels=4)
    records = B.write_synthetic_files(str(tmp_path), 2, (48, 64), 4, ("float16", "uint16"))
    assert set(records) == {"float16", "uint16"} and len(records["uint16"]) == 2
    mappers = B.build_mappers(base, (48, 64))
    for name, workers in (("rgb", 0), ("polar", 0), ("polar", 1)):
        result = B.mapper_throughput(mappers[name], records["uint16"], workers, 3)
        assert result["samples_per_s"] > 0 and result["ms_per_sample"] > 0
    sample = mappers["polar"](records["float16"][0])  # on the default branch's stride-4 grid
    assert sample["stack"].shape == (4, 12, 16) and sample["image"].shape == (3, 48, 64)
    assert mappers[B.FULL_RESOLUTION](records["float16"][0])["stack"].shape == (4, 48, 64)

    mem = B.worker_memory_run(mappers["polar"], records["uint16"], 1, 8, 2, progress=lambda _: None)
    assert mem["samples"] >= 8 and len(mem["series"]) >= 2
    assert all(s["workers"] == 1 and s["rss_mb"] > 0 for s in mem["series"])
    assert mem["first_rss_mb"] > 0 and mem["warm_rss_mb"] > 0 and mem["last_rss_mb"] > 0
    assert mem["warm_samples"] >= 2


def test_derived_mappers_deliver_what_their_model_reads(tmp_path):
    """DERIVED_ON "model": the stored uint16 angles (the model derives); "loader": float32 derived."""
    base = B.base_config(benchmark.DEFAULT_CONFIG, ["INPUT.STACK.POLARIZATION", "angles", "INPUT.STACK.DERIVED",
                                                    "raw", "INPUT.STACK.CHANNELS", "0"], channels=8)
    records = B.write_synthetic_files(str(tmp_path), 1, (48, 64), 8, ("uint16",))
    mappers = B.build_mappers(base, (48, 64), derived=[("stokes", "model"), ("dolp_aolp_trig", "loader")])
    assert set(mappers) == {"rgb", "polar", B.FULL_RESOLUTION, "polar stokes@model", "polar dolp_aolp_trig@loader"}
    on_model = mappers["polar stokes@model"](records["uint16"][0])["stack"]
    in_loader = mappers["polar dolp_aolp_trig@loader"](records["uint16"][0])["stack"]
    assert on_model.dtype == torch.uint16 and on_model.shape == (8, 12, 16)  # the stride-4 grid
    assert in_loader.dtype == torch.float32 and in_loader.shape == (6, 12, 16)
    assert benchmark.derived_modes(base, [("stokes", "model")]) == [("stokes", "model")]
    base.INPUT.STACK.POLARIZATION = ""
    assert benchmark.derived_modes(base, [("stokes", "model")]) == []


def _report(default_train_ratio, mapper_ratio, last_uss):
    model = dict(size="64x96", batch=1, label="x", params=10, gflops=1.0, train_s=1.0, infer_s=0.5, peak_mb=100.0)
    models = [dict(model, variant="vanilla"), dict(model, variant="default", train_s=default_train_ratio),
              dict(model, variant="lightest")]
    B.add_ratios(models, ("params", "gflops", "train_s", "infer_s", "peak_mb"), key="variant", base="vanilla")
    mappers = [dict(size="64x96", mapper="rgb", stack_dtype="-", workers=0, samples_per_s=100.0, ms_per_sample=10.0),
               dict(size="64x96", mapper="polar", stack_dtype="uint16", workers=0, samples_per_s=50.0,
                    ms_per_sample=10.0 * mapper_ratio)]
    B.add_ratios(mappers, ("ms_per_sample",), key="mapper", base="rgb", group=("size", "workers"))
    series = [dict(samples=s, seconds=s / 10, workers=2, rss_mb=500.0, uss_mb=u)
              for s, u in ((100, 40.0), (200, 40.0), (300, last_uss))]
    return {"machine": dict(platform="Linux", cpu_count=2, device="cpu", torch="2", torch_threads=2,
                            torch_interop_threads=2, detectron2="0.6", python="3.11", opencv_threads=2,
                            load_average_start=[0.1, 0.2, 0.3], date="today", lscpu=["CPU(s): 2"]),
            "settings": dict(command="python tools/benchmark.py", config_file="c.yaml", opts=[], depth=None,
                             channels=None, batch={"64x96": 1}, warmup=1, iters=3, lr=0.0),
            "models": models, "mappers": mappers, "profile": None,
            "worker_memory": dict(size="64x96", mapper="polar", stack_dtype="uint16", workers=2, samples=300,
                                  interval=100, series=series, first_rss_mb=500.0, warm_rss_mb=500.0,
                                  last_rss_mb=500.0, warm_samples=100, first_uss_mb=30.0, warm_uss_mb=40.0,
                                  last_uss_mb=last_uss)}


def test_targets_and_markdown_from_a_report():
    report = _report(default_train_ratio=1.05, mapper_ratio=2.0, last_uss=40.5)
    met = {t["target"]: t["met"] for t in benchmark.evaluate_targets(report)}
    assert met["default train s/iter at 64x96 <= +10% of vanilla"] is True
    assert met["lightest inference s/image at 64x96 <= +3% of vanilla"] is True
    assert [v for k, v in met.items() if k.startswith("polar mapper")] == [False]
    assert [v for k, v in met.items() if k.startswith("loader worker memory")] == [True]

    report = _report(default_train_ratio=1.2, mapper_ratio=1.2, last_uss=60.0)
    report["targets"] = benchmark.evaluate_targets(report)
    met = {t["target"]: t["met"] for t in report["targets"]}
    assert met["default train s/iter at 64x96 <= +10% of vanilla"] is False
    assert [v for k, v in met.items() if k.startswith(("polar mapper", "loader worker"))] == [True, False]

    text = benchmark.to_markdown(report)
    assert "| 64x96 | 1     | default  | 0.00       | 1.0    | 1.200        |" in text
    assert "| default train s/iter at 64x96 <= +10% of vanilla" in text and "**no**" in text
    assert "| 300     | 30.0    | 2       | 500.0     | 60.0    |" in text


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="unknown variant 'nope'"):
        B.get_variants(["vanilla", "nope"])
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        B.parse_size("800")
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--sizes", "10x10"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--iters", "-1"])
    assert [v.name for v in B.get_variants(["lightest", "vanilla", "default"])] == ["vanilla", "lightest", "default"]


def test_raw_frames_report(tmp_path, monkeypatch):
    """--raw-frames: read cost per raw frame (mono, color; each interpolation) next to a ready
    uint16 stack, and the round-trip table (one tiny row instead of the 8 full ones)."""
    from polar_rcnn.analysis import raw_frames

    real = raw_frames.round_trip_errors
    monkeypatch.setattr(raw_frames, "round_trip_errors", lambda *a, **k: real(*a, **{**k, "size": (32, 32),
                                                                                        "frames": 1}))
    args = benchmark.parse_args(["--raw-frames", "--raw-size", "32x40", "--iters", "1", "--threads", "1"])
    report = benchmark.run(args)
    raw = report["raw_frames"]
    assert raw["size"] == "32x40"
    assert set(raw["read"]) == {f"{p}/{s}" for p in ("mono", "color") for s in ("bilinear", "ea", "npy uint16")}
    assert raw["read"]["color/bilinear"]["channels"] == 12 and all(r["seconds"] > 0 for r in raw["read"].values())
    assert len(raw["round_trip"]) == 8 and raw["round_trip"][0]["flat_dolp_pixels"] > 0
    text = benchmark.to_markdown(report)
    assert "## Raw polarization frames (32x40)" in text and re.search(r"\| color/npy uint16 +\| 12 +\|", text)
