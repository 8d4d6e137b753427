"""KC models as files, and Learning Factors Analysis (a search for better KC models).

- :mod:`research.kcmodel.files`: DataShop's KC-model format and CSV Q-matrices; import
  into and export from a cohort of the warehouse.
- :mod:`research.kcmodel.search`: Learning Factors Analysis over AFM fits.
"""

from research.kcmodel.files import (KCModelFile, export_kc_model, import_kc_model, read_kc_model_file,
                                    write_datashop)
from research.kcmodel.search import SearchResult, search, search_cohort

__all__ = ["KCModelFile", "SearchResult", "export_kc_model", "import_kc_model", "read_kc_model_file", "search",
           "search_cohort", "write_datashop"]
