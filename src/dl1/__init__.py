"""dl1: the UvA Deep Learning 1 (2023) course as one tested package."""

__version__ = "0.1.0"
