"""billhub: the ministry's hub between the national payment switch and its billers."""

__version__ = "0.1.0"
