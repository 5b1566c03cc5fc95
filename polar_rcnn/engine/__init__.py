"""Training and inference: the trainer and the predictor for polar models."""
from .predictor import PolarPredictor
from .trainer import PolarTrainer

__all__ = ["PolarPredictor", "PolarTrainer"]
