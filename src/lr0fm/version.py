"""lr0fm's version: a leaf module, read by the build (pyproject.toml) and by records."""
__version__ = "0.1.0"
