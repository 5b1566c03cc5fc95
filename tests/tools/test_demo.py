"""tools/demo.py: the side-by-side AP table of the polar model and its RGB-only baseline, read from
the COCO evaluations train_net.py appends to each model's metrics.json."""
import json

import pytest

from tools import demo


def _metrics(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_the_last_box_evaluation_of_a_run_and_the_table(tmp_path):
    rgb = _metrics(tmp_path / "rgb", [{"iteration": 9, "total_loss": 1.0},
                                      {"iteration": 9, "bbox/AP": 0.5, "bbox/AP50": 2.0, "bbox/AP75": 0.0}])
    polar = _metrics(tmp_path / "polar", [{"iteration": 9, "bbox/AP": 1.0, "bbox/AP50": 1.0, "bbox/AP75": 1.0},
                                          {"iteration": 9, "eval_only": "x", "bbox/AP": 30.25, "bbox/AP50": 61.0,
                                           "bbox/AP75": 28.0, "bbox/AP-a": 3.0}])
    results = {"RGB only": demo.last_evaluation(rgb), "polar": demo.last_evaluation(polar)}
    assert results["polar"] == {"AP": 30.25, "AP50": 61.0, "AP75": 28.0, "AP-a": 3.0}  # the latest evaluation
    table = demo.comparison_table(results).splitlines()
    assert table[0] == "| model | AP | AP50 | AP75 |"
    assert table[2] == "| RGB only | 0.5 | 2.0 | 0.0 |"
    assert table[3] == "| polar | 30.2 | 61.0 | 28.0 |"
    assert table[4] == "| polar - RGB only | +29.8 | +59.0 | +28.0 |"


def test_a_run_without_an_evaluation_is_an_error(tmp_path):
    run = _metrics(tmp_path / "run", [{"iteration": 9, "total_loss": 1.0}])
    with pytest.raises(RuntimeError, match="metrics.json holds no COCO box evaluation"):
        demo.last_evaluation(run)
