"""course-research: the OLI improvement loop on real course data.

Raw exports go in through :mod:`research.ingest` into a DuckDB warehouse
(:mod:`research.warehouse`); :mod:`research.estimate` turns canonical tables into
tidy estimates with their uncertainty; :mod:`research.recommend` turns estimates into
advice; :mod:`research.pipeline` runs the notebooks per cohort.

Importing the package has no side effects: no global options are set, nothing is read.
"""

__version__ = "0.1.0"

from research.errors import ConfigError, DataError, ResearchError, SchemaError

__all__ = ["ConfigError", "DataError", "ResearchError", "SchemaError", "__version__"]
