"""Datasets: readers of the original layouts, images, splits, density maps, synthetic crowds."""
from .splits import split_train_val

__all__ = ["split_train_val"]
