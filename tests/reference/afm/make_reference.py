"""Compute the AFM reference values once with R's lme4::glmer (run by hand, not by the tests).

    .venv/bin/python tests/reference/afm/make_reference.py

Reads the real DataShop files in ../shared/data (never copied), builds each KC model's
AFM design with research.estimate.opportunities, writes it to a temporary folder, runs
make_reference.R on it and keeps only the estimates (fixed effects, random-effect modes
per anonymous DataShop student id, log-likelihoods) beside this script.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from research.estimate.opportunities import read_datashop_student_step  # noqa: E402

CASES = [
    ("language96", DATA / "datashop_ds96_student_step_and_tx" / "ds96_student_step_export.txt", ["Single-KC", "Default"]),
    ("geometry76", DATA / "datashop_ds76_geometry_area" / "ds76_student_step_partial_4students_48kcmodels.txt",
     ["Original", "Area", "Textbook"]),
]


def learner_hash(learner_id: str) -> str:
    """The name a learner has in the stored reference files (tests/test_afm.py uses the same)."""
    return "h_" + hashlib.sha256(str(learner_id).encode("utf-8")).hexdigest()[:16]


def design(steps: pd.DataFrame, kc_model: str) -> pd.DataFrame:
    s = steps[steps["kc_model"] == kc_model]
    s = s.assign(t=s["opportunity"].astype(float) - 1.0)
    b = s.pivot_table(index="step_row", columns="kc", values="t", aggfunc="size", fill_value=0).add_prefix("b__")
    g = s.pivot_table(index="step_row", columns="kc", values="t", aggfunc="sum", fill_value=0.0).add_prefix("g__")
    first = s.drop_duplicates("step_row").set_index("step_row")
    # DataShop's student ids are not stored with the reference values: only a hash of them
    out = pd.DataFrame({"learner": first["learner_id"].map(learner_hash), "y": first["success"]}).join(b).join(g)
    return out.reset_index(drop=True)


def main() -> None:
    for name, path, models in CASES:
        steps = read_datashop_student_step(path, kc_models=models)
        for model in models:
            slug = model.replace(" ", "_").replace("-", "_")
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "design.csv"
                design(steps, model).to_csv(csv, index=False)
                subprocess.run(["Rscript", str(HERE / "make_reference.R"), str(csv), str(HERE / f"{name}_{slug}")],
                               check=True)
            print("done", name, model)


if __name__ == "__main__":
    main()
