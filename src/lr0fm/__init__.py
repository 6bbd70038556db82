"""lr0fm: low-resolution robustness of zero-shot vision-language foundation models."""
__version__ = "0.1.0"
