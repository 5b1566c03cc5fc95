"""Training and inference: the trainer and the predictor for polar models."""
from .checkpoint import LoadSummary, PolarCheckpointer, load_for_inference
from .freezing import PART_ALIASES, freeze_from_config, freeze_parameters, parameter_table, select_parameters
from .hooks import BestCheckpointer, UnfreezeHook
from .predictor import PolarPredictor
from .trainer import PolarTrainer

__all__ = [
    "BestCheckpointer",
    "PART_ALIASES",
    "LoadSummary",
    "PolarCheckpointer",
    "PolarPredictor",
    "PolarTrainer",
    "UnfreezeHook",
    "freeze_from_config",
    "load_for_inference",
    "freeze_parameters",
    "parameter_table",
    "select_parameters",
]
