"""Datasets: layout detection, safe decoding, the synthetic demo set, views and loaders.

Importing this package does not import torch (the app window must open fast);
`fgdesk.data.augment` and `fgdesk.data.loading` do, so import them by name.
"""
from fgdesk.data.images import IMAGE_EXTENSIONS, MAX_PIXELS, ImageDecodeError, load_rgb, probe_image
from fgdesk.data.layouts import DatasetError, DatasetIndex, DatasetSummary, Problem, Sample, detect
from fgdesk.data.synthetic import make_demo_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "DatasetError",
    "DatasetIndex",
    "DatasetSummary",
    "ImageDecodeError",
    "Problem",
    "Sample",
    "detect",
    "load_rgb",
    "make_demo_dataset",
    "probe_image",
]
