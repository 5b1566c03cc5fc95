"""Helpers of the evaluation tests: a tiny training config over the ``tiny_data`` fixture."""
from tests.common import get_polar_cfg

NUM_BANDS = 1  # 4-channel stacks


def tiny_train_cfg(data, output_dir, max_iter=4, **overrides):
    """A config that trains a few iterations on :func:`tiny_data` and evaluates on its val split."""
    cfg = get_polar_cfg()
    cfg.INPUT.STACK.DERIVED = "dolp_aolp_trig"  # as the demo: 3 channels from the 4 angles of a band
    cfg.MODEL.POLAR.IN_CHANNELS = 3 * NUM_BANDS
    cfg.INPUT.STACK.CHANNELS = 4 * NUM_BANDS
    cfg.MODEL.POLAR.STACK_MEAN = [0.0]
    cfg.MODEL.POLAR.STACK_STD = [1.0]
    cfg.DATASETS.TRAIN = (data["train"],)
    cfg.DATASETS.TEST = (data["val"],)
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 96
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 0
    cfg.OUTPUT_DIR = str(output_dir)
    for key, value in overrides.items():  # dotted keys with "__" for ".", as get_polar_cfg
        node = cfg
        *parents, leaf = key.split("__")
        for p in parents:
            node = getattr(node, p)
        assert hasattr(node, leaf), key
        setattr(node, leaf, value)
    return cfg
