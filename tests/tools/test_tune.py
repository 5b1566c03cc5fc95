"""tools/tune.py: a two-trial Optuna study on tiny data, resumed from its SQLite file."""
import os

import optuna
import pytest
from tests.tools.eval_tool_utils import DEMO_CONFIG, tiny_opts
from tools import tune



def test_study_runs_and_resumes_from_sqlite(tiny_split, tmp_path, capsys):
    root, json_file = tiny_split
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    output = tmp_path / "tune"
    argv = ["--config-file", DEMO_CONFIG, "--max-iter", "2", "--output", str(output), "--storage", storage,
            "--study-name", "tiny", *tiny_opts("_tune_tiny", root, json_file, max_iter=4),
            "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "(2,)"]
    assert tune.main(["--trials", "1"] + argv) == 0
    out = capsys.readouterr().out
    assert "0 finished trials, running 1 more" in out
    # a 2-iteration trial of a 4-iteration schedule: warmup and steps at half
    assert "Trial schedule: SOLVER.MAX_ITER 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS (1,)" in out
    trial_cfg = (output / "trial_000" / "config.yaml").read_text()
    assert "WARMUP_ITERS: 1" in trial_cfg and "MAX_ITER: 2" in trial_cfg
    assert not [f for f in os.listdir(output / "trial_000") if f.endswith(".pth") or f == "last_checkpoint"]
    assert "Model:" not in out and "Model:" not in (output / "log.txt").read_text()  # no model printout
    assert "Trial 0: bbox/AP = " in out

    assert tune.main(["--trials", "2"] + argv) == 0  # a second process would do the same
    out = capsys.readouterr().out
    assert "1 finished trials, running 1 more" in out
    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2
    # every searched key, with the trials' own values
    assert set(trials[0].params) == {"SOLVER.BASE_LR", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "MODEL.RPN.NMS_THRESH",
                                     "MODEL.POLAR.MODALITY_DROPOUT"} | {f"MODEL.LOSS_WEIGHTS.{k}" for k in tune.LOSS_KEYS}
    assert trials[0].params != trials[1].params
    for t in trials:
        assert 0.0 <= t.value <= 100.0
        assert os.path.isfile(os.path.join(t.user_attrs["output_dir"], "metrics.json"))
        assert "bbox/AP50" in t.user_attrs["results"] or t.value == 0.0
    best = study.best_trial
    assert f"Best trial {best.number}" in out
    reproduce = next(line for line in out.splitlines() if line.startswith("Reproduce:"))
    assert f"SOLVER.BASE_LR {best.params['SOLVER.BASE_LR']!r}" in reproduce
    assert "SOLVER.MAX_ITER 2 SOLVER.WARMUP_ITERS 1 SOLVER.STEPS '(1,)'" in reproduce
    assert reproduce.endswith(f"OUTPUT_DIR {output / f'reproduce_trial_{best.number:03d}'}")

    assert tune.main(["--trials", "2"] + argv) == 0  # nothing left to run
    assert "2 finished trials, running 0 more" in capsys.readouterr().out

    assert tune.main(["--trials", "3", "--keep-checkpoints"] + argv) == 0
    assert os.path.isfile(output / "trial_002" / "model_final.pth")


def test_interrupted_trial_is_retried(tmp_path):
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    trial.suggest_float("SOLVER.BASE_LR", 0.001, 0.1, log=True)  # then the process died
    assert tune.recover_interrupted(study) == 1
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    retried = study.ask()
    assert retried.suggest_float("SOLVER.BASE_LR", 0.001, 0.1, log=True) == trial.params["SOLVER.BASE_LR"]


def test_metric_value():
    results = {"bbox": {"AP": 12.5, "AP50": float("nan")}}
    assert tune.metric_value(results, "bbox/AP") == 12.5
    assert tune.metric_value(results, "bbox/AP50") == 0.0  # no detections
    with pytest.raises(KeyError, match="bbox/AP"):
        tune.metric_value(results, "segm/AP")


def test_schedule_scaled_to_the_trial_length():
    from polar_rcnn.engine.cli import setup_cfg

    cfg = setup_cfg(DEMO_CONFIG, ["MODEL.FREEZE.UNFREEZE_ITER", "100"], freeze=False)
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, tuple(cfg.SOLVER.STEPS)) == (200, 40, (150, 185))
    assert tune.schedule_opts(cfg, 10) == ["SOLVER.MAX_ITER", "10", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS",
                                           "(8, 9)", "MODEL.FREEZE.UNFREEZE_ITER", "5"]
    # 150 -> 3, 185 -> 4 = the end: dropped (steps stay inside the run)
    assert tune.schedule_opts(cfg, 4)[:6] == ["SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS",
                                              "(3,)"]
    assert tune.schedule_opts(cfg, 200) == [] and tune.schedule_opts(cfg, 0) == []
    cfg.merge_from_list(tune.schedule_opts(cfg, 400))
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, tuple(cfg.SOLVER.STEPS)) == (400, 80, (300, 370))


def test_a_tie_with_the_best_trial_is_a_warning():
    import logging
    from types import SimpleNamespace

    study = optuna.create_study(direction="maximize")
    dist = {"SOLVER.BASE_LR": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}
    for value, lr in ((0.0, 0.01), (0.0, 0.02), (0.0, 0.03)):
        study.add_trial(optuna.trial.create_trial(value=value, params={"SOLVER.BASE_LR": lr}, distributions=dist))
    assert tune.tied_with_best(study) == [1, 2]
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tune.logger.addHandler(handler)
    try:
        args = SimpleNamespace(metric="bbox/AP", config_file="c.yaml", opts=[], output="out")
        tune.report(study, args)
        assert any("[1, 2]" in r.getMessage() and "cannot be told apart" in r.getMessage() for r in records)
        records.clear()
        study.add_trial(optuna.trial.create_trial(value=5.0, params={"SOLVER.BASE_LR": 0.04}, distributions=dist))
        assert tune.tied_with_best(study) == []
        tune.report(study, args)
        assert not any("cannot be told apart" in r.getMessage() for r in records)
    finally:
        tune.logger.removeHandler(handler)
