#!/usr/bin/env python
"""Hyperparameter search with Optuna: each trial is a short training + COCO evaluation.

    .venv/bin/python tools/tune.py --config-file configs/faster_rcnn_R_18_FPN_demo_polar_synth.yaml \\
        --trials 20 --max-iter 200 --output output/tune
    # interrupted? the same command resumes the study from its SQLite file:
    .venv/bin/python tools/tune.py --config-file CONFIG --trials 20 --storage sqlite:///output/tune/study.db \\
        --study-name demo --space lr,loss_weights --metric bbox/AP50 SOLVER.IMS_PER_BATCH 2

Search space (--space, comma-separated; the parameter names are the config keys):
  lr                SOLVER.BASE_LR, log-uniform in --lr-range
  loss_weights      MODEL.LOSS_WEIGHTS.RPN_CLS / RPN_LOC / ROI_CLS / ROI_LOC, log-uniform in --loss-weight-range
  nms               MODEL.ROI_HEADS.NMS_THRESH_TEST in [0.3, 0.7] and MODEL.RPN.NMS_THRESH in [0.5, 0.8]
                    (RetinaNet: MODEL.RETINANET.NMS_THRESH_TEST)
  modality_dropout  MODEL.POLAR.MODALITY_DROPOUT in [0, 0.5] (models that read a stack)

Each trial trains the config (plus the trailing opts and the trial's values) in-process with
PolarTrainer for --max-iter iterations (default: the config's SOLVER.MAX_ITER) in
<output>/trial_<number>, with the config's SEED, evaluates on DATASETS.TEST (use a validation
split) and returns --metric (a key of the flattened results, e.g. bbox/AP, bbox/AP50; no
detections = 0). A trial whose loss diverges is recorded as failed. With --max-iter the schedule
is scaled to it: SOLVER.WARMUP_ITERS, SOLVER.STEPS and MODEL.FREEZE.UNFREEZE_ITER keep their
fraction of SOLVER.MAX_ITER (a 10-iteration trial of a 200-iteration config warms up for 2, not 40).
A trial's checkpoints (*.pth) are deleted when it ends (--keep-checkpoints keeps them); its
config.yaml, metrics.json and events stay. The console shows two lines per trial (its values, its
result) and warnings; the trainers' log goes to <output>/log.txt (without the model printout) and
what the evaluation prints to <trial>/stdout.txt (--verbose: all of it on the console too). The study lives in the
--storage database (default sqlite:///<output>/study.db) under --study-name and is loaded if it
exists: --trials is the total number of finished trials wanted, so rerunning the command after an
interruption runs only the missing ones (a trial left running by the interrupted process is marked
failed and its parameters are tried again). One process per study. At the end it prints every
trial, the best one (with a warning when other trials have the same value: they cannot be told
apart) and the train_net.py command that reproduces it in its own OUTPUT_DIR
(<output>/reproduce_trial_<number>).
"""
import argparse
import contextlib
import glob
import logging
import math
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger("polar_rcnn.tools.tune")
SPACES = ("lr", "loss_weights", "nms", "modality_dropout")
LOSS_KEYS = ("RPN_CLS", "RPN_LOC", "ROI_CLS", "ROI_LOC")


def _floats(text: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"give LOW,HIGH, e.g. 0.002,0.05; got {text!r}")
    if not 0 < lo < hi:
        raise argparse.ArgumentTypeError(f"need 0 < LOW < HIGH, got {text!r}")
    return lo, hi


def _spaces(text: str) -> List[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SPACES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--space takes a comma-separated subset of {','.join(SPACES)}; got {text!r}")
    return names


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config yaml of the model to tune")
    p.add_argument("--trials", type=int, default=20,
                   help="finished trials wanted in the study (total) (default: %(default)s)")
    p.add_argument("--max-iter", type=int, default=0, help="SOLVER.MAX_ITER of each trial (0: the config's)")
    p.add_argument("--metric", default="bbox/AP",
                   help="objective (maximized), a key of the flattened COCO results (default: %(default)s)")
    p.add_argument("--space", type=_spaces, default=list(SPACES), metavar="NAMES",
                   help=f"what to search, comma-separated (default: {','.join(SPACES)})")
    p.add_argument("--lr-range", type=_floats, default=(0.002, 0.05), metavar="LOW,HIGH",
                   help="SOLVER.BASE_LR range (default: 0.002,0.05)")
    p.add_argument("--loss-weight-range", type=_floats, default=(0.25, 4.0), metavar="LOW,HIGH",
                   help="range of each loss weight (default: 0.25,4)")
    p.add_argument("--output", default="output/tune", metavar="DIR", help="trial folders (and the default storage)")
    p.add_argument("--storage", default="", metavar="URL", help="Optuna storage (default: sqlite:///<output>/study.db)")
    p.add_argument("--study-name", default="", help="default: the config file's base name")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of Optuna's TPE sampler (plus the number of trials already in the study)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each trial's checkpoints (*.pth)")
    p.add_argument("--verbose", action="store_true", help="the trainers' whole log on the console")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides for every trial, as trailing KEY VALUE pairs")
    args = p.parse_args(argv)
    if args.trials < 1 or args.max_iter < 0:
        p.error("--trials >= 1 and --max-iter >= 0 required")
    return args


def suggest(trial, cfg, space: Sequence[str], lr_range, weight_range) -> List[str]:
    """The trial's values as config opts ``[KEY, VALUE, ...]`` (parameter names are the keys)."""
    from polar_rcnn.architecture import is_dense_detector

    retinanet = is_dense_detector(cfg)
    reads_stack = cfg.INPUT.STACK.ENABLED and cfg.MODEL.META_ARCHITECTURE.startswith("Polar")
    values: Dict[str, float] = {}
    if "lr" in space:
        values["SOLVER.BASE_LR"] = trial.suggest_float("SOLVER.BASE_LR", *lr_range, log=True)
    if "loss_weights" in space:
        for key in LOSS_KEYS[2:] if retinanet else LOSS_KEYS:
            name = f"MODEL.LOSS_WEIGHTS.{key}"
            values[name] = trial.suggest_float(name, *weight_range, log=True)
    if "nms" in space:
        if retinanet:
            values["MODEL.RETINANET.NMS_THRESH_TEST"] = trial.suggest_float("MODEL.RETINANET.NMS_THRESH_TEST", 0.3, 0.7)
        else:
            values["MODEL.ROI_HEADS.NMS_THRESH_TEST"] = trial.suggest_float("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.3, 0.7)
            values["MODEL.RPN.NMS_THRESH"] = trial.suggest_float("MODEL.RPN.NMS_THRESH", 0.5, 0.8)
    if "modality_dropout" in space and reads_stack:
        values["MODEL.POLAR.MODALITY_DROPOUT"] = trial.suggest_float("MODEL.POLAR.MODALITY_DROPOUT", 0.0, 0.5)
    return params_to_opts(values)


def schedule_opts(cfg, max_iter: int) -> List[str]:
    """Config opts scaling ``cfg``'s schedule to ``max_iter`` iterations: SOLVER.MAX_ITER, and
    SOLVER.WARMUP_ITERS, SOLVER.STEPS, MODEL.FREEZE.UNFREEZE_ITER at the same fraction of it
    (rounded; a warmup or unfreeze stays >= 1 iteration, steps stay inside the run)."""
    total = int(cfg.SOLVER.MAX_ITER)
    if not max_iter or max_iter == total:
        return []
    f = max_iter / total
    opts = ["SOLVER.MAX_ITER", str(max_iter)]
    if cfg.SOLVER.WARMUP_ITERS > 0:
        opts += ["SOLVER.WARMUP_ITERS", str(max(1, round(cfg.SOLVER.WARMUP_ITERS * f)))]
    steps = sorted({round(step * f) for step in cfg.SOLVER.STEPS} & set(range(1, max_iter)))
    opts += ["SOLVER.STEPS", str(tuple(steps))]
    if cfg.MODEL.FREEZE.UNFREEZE_ITER > 0:
        opts += ["MODEL.FREEZE.UNFREEZE_ITER", str(max(1, round(cfg.MODEL.FREEZE.UNFREEZE_ITER * f)))]
    return opts


def remove_checkpoints(output_dir: str) -> int:
    """Delete the checkpoints (*.pth and the last_checkpoint tag) of a trial folder; returns the bytes freed."""
    freed = 0
    for path in glob.glob(os.path.join(output_dir, "*.pth")) + glob.glob(os.path.join(output_dir, "last_checkpoint")):
        freed += os.path.getsize(path)
        os.remove(path)
    return freed


def tied_with_best(study) -> List[int]:
    """Numbers of the complete trials other than the best whose value equals the best one's."""
    import optuna

    best = study.best_trial
    return [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
            and t.number != best.number and math.isclose(t.value, best.value, rel_tol=0, abs_tol=1e-9)]


class _NoModelPrintout(logging.Filter):
    """Drops the trainer's "Model:\n<every module>" record (detectron2.engine.defaults)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "detectron2.engine.defaults" and str(record.msg).startswith("Model:"))


@contextlib.contextmanager
def quiet_trial_logs(verbose: bool):
    """Within the block: no model printout in any log of the detectron2 and polar_rcnn loggers and,
    unless ``verbose``, only their warnings on the console, and only Optuna's warnings. The
    handlers and Optuna's verbosity are restored after it."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    if not verbose:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    drop = _NoModelPrintout()
    handlers = [h for name in ("detectron2", "polar_rcnn") for h in logging.getLogger(name).handlers]
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.addFilter(drop)
        if not verbose and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels):
            handler.removeFilter(drop)
            handler.setLevel(level)
        optuna.logging.set_verbosity(verbosity)


def params_to_opts(params: Dict[str, float]) -> List[str]:
    return [x for key in sorted(params) for x in (key, repr(float(params[key])))]


def metric_value(results: Dict, metric: str) -> float:
    """``metric`` of nested evaluation results; NaN (no detections) counts as 0."""
    from detectron2.evaluation.testing import flatten_results_dict

    flat = flatten_results_dict(results)
    if metric not in flat:
        raise KeyError(f"--metric {metric!r} is not in the evaluation results; they have {sorted(flat)}")
    value = float(flat[metric])
    return 0.0 if math.isnan(value) else value


def recover_interrupted(study) -> int:
    """Mark trials left RUNNING by an interrupted process as failed and queue their parameters again."""
    import optuna

    stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params)
        logger.warning("Trial %d was left running by an interrupted search: marked failed, parameters queued again",
                       t.number)
    return len(stale)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    import optuna
    from detectron2.evaluation.testing import flatten_results_dict
    from detectron2.utils.logger import setup_logger
    from polar_rcnn.engine.cli import setup_cfg
    from polar_rcnn.engine.runs import train_and_evaluate

    os.makedirs(args.output, exist_ok=True)
    setup_logger(args.output, name="polar_rcnn", abbrev_name="polar")
    setup_logger(args.output, name="detectron2", abbrev_name="d2")
    try:
        base = setup_cfg(args.config_file, args.opts, freeze=False)
    except (ValueError, KeyError, AssertionError) as e:  # yacs asserts on unknown keys
        print(f"Config error: {e}", file=sys.stderr)
        return 2
    schedule = schedule_opts(base, args.max_iter)
    base.merge_from_list(schedule)
    if schedule:
        print("Trial schedule: " + " ".join(schedule))
    if not base.DATASETS.TEST:
        print("DATASETS.TEST is empty: trials need a validation dataset to evaluate on.", file=sys.stderr)
        return 2
    storage = args.storage or f"sqlite:///{os.path.abspath(os.path.join(args.output, 'study.db'))}"
    study_name = args.study_name or os.path.splitext(os.path.basename(args.config_file))[0]
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction="maximize")
    # a resumed search must not replay the random start of the first one: seed by the trials there
    sampler = optuna.samplers.TPESampler(seed=args.seed + len(study.trials))
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    recover_interrupted(study)
    done = sum(t.state.is_finished() for t in study.trials)
    remaining = max(args.trials - done, 0)
    print(f"Study {study_name!r} in {storage}: {done} finished trials, running {remaining} more")

    def objective(trial):
        opts = suggest(trial, base, args.space, args.lr_range, args.loss_weight_range)
        cfg = base.clone()
        cfg.merge_from_list(opts)
        cfg.OUTPUT_DIR = os.path.join(args.output, f"trial_{trial.number:03d}")
        cfg.freeze()
        trial.set_user_attr("output_dir", cfg.OUTPUT_DIR)
        print(f"Trial {trial.number}: {' '.join(opts)}", flush=True)
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        try:
            # what the evaluation prints (pycocotools' tables) goes to the trial's stdout.txt
            with open(os.path.join(cfg.OUTPUT_DIR, "stdout.txt"), "a") as out, \
                    contextlib.redirect_stdout(sys.stdout if args.verbose else out):
                results = train_and_evaluate(cfg)
        finally:
            if not args.keep_checkpoints:
                remove_checkpoints(cfg.OUTPUT_DIR)
        flat = {k: float(v) for k, v in flatten_results_dict(results).items()}
        trial.set_user_attr("results", {k: v for k, v in flat.items() if not math.isnan(v)})
        value = metric_value(results, args.metric)
        print(f"Trial {trial.number}: {args.metric} = {value:.3f}", flush=True)
        return value

    if remaining:
        with quiet_trial_logs(args.verbose):
            study.optimize(objective, n_trials=remaining, catch=(FloatingPointError,))
    report(study, args, schedule)
    return 0


def report(study, args, schedule: Sequence[str] = ()) -> None:
    import optuna
    from tabulate import tabulate

    rows = [[t.number, t.state.name, "-" if t.value is None else f"{t.value:.3f}",
             " ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" for k, v in sorted(t.params.items()))]
            for t in study.trials]
    print(tabulate(rows, headers=["trial", "state", args.metric, "parameters"], tablefmt="pipe"))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        print("No trial finished.")
        return
    best = study.best_trial
    opts = params_to_opts(best.params)
    print(f"\nBest trial {best.number}: {args.metric} = {best.value:.3f} ({best.user_attrs.get('output_dir', '')})")
    ties = tied_with_best(study)
    if ties:
        logger.warning("Trials %s have the same %s (%.3f) as the best trial %d: they cannot be told apart, and "
                       "'best' is only the first of them. Train longer (--max-iter), or evaluate on a larger "
                       "validation set.", ties, args.metric, best.value, best.number)
    print("Config opts: " + " ".join(opts))
    command = [".venv/bin/python", "train_net.py", "--config-file", args.config_file] + list(args.opts)
    command += list(schedule) + opts + ["OUTPUT_DIR", os.path.join(args.output, f"reproduce_trial_{best.number:03d}")]
    print("Reproduce:   " + " ".join(shlex.quote(c) for c in command))


if __name__ == "__main__":
    sys.exit(main())
