"""Datasets: readers of the original layouts, images, splits, density maps, synthetic crowds."""
