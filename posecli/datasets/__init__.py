"""Datasets: metadata, COCO-format top-down dataset, converters, synthetic people."""
