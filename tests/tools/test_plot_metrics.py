"""tools/plot_metrics.py: loss and AP curves from metrics.json files, several runs, missing keys."""
import json

import cv2

from polar_rcnn.utils.plots import (DPI, PANEL_SIZE, SPARSE_POINTS, draw_runs, eval_keys, loss_keys, read_metrics,
                                    resumes, series)
from tools import plot_metrics

LOSSES = ("total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc")


def _write_run(path, iters=range(19, 200, 20), eval_iters=(99, 199), with_eval=True, drop=()):
    path.mkdir(parents=True)
    lines = []
    for i in iters:
        record = {"iteration": i, "lr": 0.02, **{k: 1.0 / (i + 1) for k in LOSSES if k not in drop}}
        lines.append(json.dumps(record))
        if with_eval and i in eval_iters:
            lines.append(json.dumps({"iteration": i, "bbox/AP": i / 10, "bbox/AP50": i / 5, "bbox/AP75": i / 20,
                                     "bbox/AP-glass": float("nan") if i == 99 else 3.0}))
    lines.append('{"iteration": 219, "total_lo')  # cut off by an interrupted write
    (path / "metrics.json").write_text("\n".join(lines) + "\n")
    return str(path)


def _size(png):
    image = cv2.imread(str(png))
    assert image is not None, png
    return image.shape[1], image.shape[0]  # width, height


def test_two_runs_losses_and_eval_pngs(tmp_path, capsys):
    a = _write_run(tmp_path / "a")
    b = _write_run(tmp_path / "b", with_eval=False, drop=("loss_rpn_loc",))
    out = tmp_path / "plots"
    assert plot_metrics.main(["--runs", a, b, "--output", str(out)]) == 0
    # losses: 5 losses + lr = 6 panels in 3 columns, 2 rows; eval: AP, AP50, AP75, AP-glass = 4 panels
    panel_w, panel_h = int(PANEL_SIZE[0] * DPI), int(PANEL_SIZE[1] * DPI)
    assert _size(out / "losses.png") == (3 * panel_w, 2 * panel_h)
    assert _size(out / "eval.png") == (3 * panel_w, 2 * panel_h)
    printed = capsys.readouterr().out
    assert "a: 12 records" in printed and "b: 10 records" in printed


def test_robust_reading(tmp_path):
    records = read_metrics(_write_run(tmp_path / "r"))
    assert len(records) == 12  # 10 training + 2 eval lines; the cut-off line skipped
    assert series(records, "bbox/AP-glass") == ([199], [3.0])  # NaN left out
    assert series(records, "missing") == ([], [])
    runs = {"r": records}
    assert loss_keys(runs) == ["total_loss", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"]
    assert eval_keys(runs)[:3] == ["bbox/AP", "bbox/AP50", "bbox/AP75"]


def test_a_run_restarted_in_the_same_folder_replaces_the_old_tail(tmp_path):
    path = _write_run(tmp_path / "r")
    with open(f"{path}/metrics.json", "a") as f:  # resumed from the checkpoint at iteration 99, stopped at 139
        for i in (119, 139):
            f.write(json.dumps({"iteration": i, "total_loss": 7.0}) + "\n")
    iters, values = series(read_metrics(path), "total_loss")
    assert iters == [19, 39, 59, 79, 99, 119, 139]
    assert values[-2:] == [7.0, 7.0] and values[0] == 1.0 / 20


def test_no_metrics_no_pictures(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.json").write_text('{"iteration": 0, "data_time": 0.1}\n')
    assert plot_metrics.main(["--runs", str(empty)]) == 1
    assert not (empty / "plots" / "losses.png").exists()
    assert plot_metrics.main(["--runs", str(tmp_path / "nowhere")]) == 2
    assert "no metrics file" in capsys.readouterr().err


def _resumed_run(tmp_path):
    """Run of 200 iterations with eval lines at 99 and 199, then resumed from 99: iterations 119, 139."""
    path = _write_run(tmp_path / "r")
    with open(f"{path}/metrics.json", "a") as f:
        for i in (119, 139):
            f.write(json.dumps({"iteration": i, "total_loss": 7.0, "lr": 0.002}) + "\n")
    return path


def test_resumes_are_iterations_going_back_or_repeating(tmp_path):
    records = read_metrics(_write_run(tmp_path / "plain"))
    assert resumes(records) == []  # evaluation lines share their training line's iteration
    train = {"total_loss": 1.0}
    repeat = [{"iteration": 19, **train}, {"iteration": 39, **train}, {"iteration": 39, "bbox/AP": 1.0},
              {"iteration": 39, **train}, {"iteration": 59, **train}, {"iteration": 9, **train}]
    assert resumes(repeat) == [39, 9]
    assert series(repeat, "total_loss") == ([9], [1.0])
    assert resumes(read_metrics(_resumed_run(tmp_path))) == [119]
    # the trainer's marker row of a --resume (metrics.json is cut back to the checkpoint first)
    marked = [{"iteration": 19, **train}, {"iteration": 20, "resumed_from": "model_0000019.pth"},
              {"iteration": 39, **train}]
    assert resumes(marked) == [20]
    assert resumes(marked + [{"iteration": 39, "eval_only": "model_final.pth", "bbox/AP": 1.0}]) == [20]
    assert series(marked, "total_loss") == ([19, 39], [1.0, 1.0])


def test_steps_markers_and_resume_lines(tmp_path, capsys):
    import matplotlib.pyplot as plt

    sparse = read_metrics(_resumed_run(tmp_path))
    dense = read_metrics(_write_run(tmp_path / "dense", iters=range(0, 4 * SPARSE_POINTS), with_eval=False))
    fig = draw_runs({"sparse": sparse, "dense": dense}, ["total_loss", "lr"])
    try:
        loss_ax, lr_ax = fig.axes[:2]
        curves = {(ax.get_title(), line.get_label()): line for ax in (loss_ax, lr_ax) for line in ax.get_lines()}
        assert curves[("lr", "sparse")].get_drawstyle() == "steps-post"
        assert curves[("total_loss", "sparse")].get_drawstyle() == "default"
        assert curves[("total_loss", "sparse")].get_marker() == "o"  # 7 points
        assert curves[("total_loss", "dense")].get_marker() in (None, "None", "")
        for ax in (loss_ax, lr_ax):  # the resume as a vertical line in every panel
            assert list(curves[(ax.get_title(), "sparse: resumed")].get_xdata()) == [119, 119]
        assert not any(label == "dense: resumed" for _, label in curves)
    finally:
        plt.close(fig)
    out = tmp_path / "plots"
    assert plot_metrics.main(["--runs", str(tmp_path / "r"), "--output", str(out)]) == 0
    assert "resumed at [119]" in capsys.readouterr().out and (out / "losses.png").exists()
