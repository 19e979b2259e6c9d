"""apa: automatic pronunciation assessment.

The core library: data, audio, the score schema, metrics, model loading and scoring.
It never imports Ray; the batch job (``ray_jobs/``) and the online service (``serve/``)
adapt it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("apa")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
