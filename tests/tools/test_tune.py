"""tools/tune.py: a two-trial Optuna study on tiny data, resumed from its SQLite file."""
import os

import optuna
import pytest
from eval_tool_utils import DEMO_CONFIG, tiny_opts
from tool_test_utils import load_tool

tune = load_tool("tune")


def test_study_runs_and_resumes_from_sqlite(tiny_split, tmp_path, capsys):
    root, json_file = tiny_split
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    argv = ["--config-file", DEMO_CONFIG, "--max-iter", "1", "--output", str(tmp_path / "tune"), "--storage", storage,
            "--study-name", "tiny", *tiny_opts("_tune_tiny", root, json_file)]
    assert tune.main(["--trials", "1"] + argv) == 0
    assert "0 finished trials, running 1 more" in capsys.readouterr().out

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
    assert f"SOLVER.BASE_LR {best.params['SOLVER.BASE_LR']!r}" in reproduce and "SOLVER.MAX_ITER 1" in reproduce

    assert tune.main(["--trials", "2"] + argv) == 0  # nothing left to run
    assert "2 finished trials, running 0 more" in capsys.readouterr().out


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
