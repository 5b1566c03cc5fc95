"""Training: the trainer for polar models."""
from .trainer import PolarTrainer

__all__ = ["PolarTrainer"]
