"""Training: BC criterion, CDL (augmentation, negatives, InfoNCE), config and the training loop.

Import the loop from ``astra_core.training.loop`` (it pulls in the model and the dataset reader);
this package's top level stays light so the pieces can be used on their own.
"""

from astra_core.training.config import TrainConfig

__all__ = ["TrainConfig"]
