"""A synthetic cohort of an online course with known truth.

The course is a fixed sequence of single-step multiple-choice items (options A-D) on
pages within modules. Each item practises one or two knowledge components (KCs) of the
true ("Fine") KC model; a second, deliberately too coarse model ("Coarse") merges pairs
of Fine KCs. First attempts follow the Additive Factors Model (AFM)::

    logit P(first attempt correct) = a_item * theta_learner
                                     + sum over the item's Fine KCs (beta_kc + gamma_kc * opportunity_kc)
                                     - item_offset  [- dif_size for the focal group of a DIF item]

with ``a_item = 1`` for every item except the planted too-easy one, ``opportunity`` =
the number of earlier steps of that KC the learner has done (0 at the first). Later
attempts and hints follow until the learner's answer is marked correct; wrong answers
pick distractors by their attractiveness (weaker learners pick attractive ones more).
Learners drop out along the sequence (a per-position hazard, higher for weaker
learners) and skip some optional practice items. Pre/post tests per module and a
Likert self-efficacy survey come with known true gains and changes.

Everything is vectorised over learners; the only loops run over positions in the
course sequence and over attempt rounds within a position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from research import __version__
from research.errors import ConfigError
from research.schema import PANDAS_TYPES, load_schema

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

__all__ = ["PLANTED", "PLANTED_ALIASES", "SimulatedCohort", "Truth", "simulate_cohort", "simulate_followup"]

#: Options of every multiple-choice item.
OPTIONS = ("A", "B", "C", "D")
#: Labels of the planted problems (``truth.items.planted``, ``truth.kcs.planted``, ``truth.pages.planted``).
PLANTED = ("too_easy", "miskeyed", "no_learning_kc", "dif", "dropout_page", "slow_page")
#: Short names accepted in ``simulate_followup(fixed=...)``.
PLANTED_ALIASES = {"no_learning": "no_learning_kc", "dropout": "dropout_page", "slow": "slow_page", "mis_keyed": "miskeyed"}
#: Canonical tables a :class:`SimulatedCohort` holds.
TABLES = ("attempts", "attempt_kcs", "assessments", "surveys", "learners", "items")


# Survey constructs: (construct, item prefix, n_items, reverse-coded item numbers, true change in SD, correlation with theta)
_SURVEY = (
    ("digital_self_efficacy", "DSE", 5, (4,), 0.5, 0.4),
    ("problem_solving", "PS", 4, (), 0.0, 0.3),
    ("help_seeking", "HS", 4, (), 0.2, 0.0),
)
# True mean ability gains (logits) of the module tests, cycled over modules; the second module has none.
_GAINS = (0.8, 0.0, 0.6, 1.0)


@dataclass
class Truth:
    """The known truth behind a :class:`SimulatedCohort` (tidy DataFrames).

    Attributes
    ----------
    learners
        learner_id (raw), theta, gender, age_band, role, region, digital_maturity,
        last_position (last position attempted, 0 if none), dropped (left before the end),
        dropout_position (position before which the learner left; NA if not dropped).
    items
        item_id, module, page, position, version, practice (optional practice item),
        kc_fine, kc_coarse (multi-KC joined with ``~~``), true_key, course_key,
        attract_A..attract_D (distractor attractiveness; NaN for the true key),
        planned_duration_s, item_offset, discrimination (slope on theta; negative
        nominal -1 for the mis-keyed item), mean_opportunity (mean prior opportunity
        count of the item's KCs among learners who attempted it), difficulty (effective
        Rasch-scale difficulty for theta 0 at that mean opportunity count, reference
        group), expected_facility (model probability that the first attempt is marked
        correct, averaged over the learners who attempted it), n_learners (who attempted
        it), planted (a label from :data:`PLANTED` or empty), dif_group
        (``"variable=focal"`` or empty), dif_reference, dif_size (logits harder for the
        focal group).
    kcs
        kc_model, kc, beta (KC easiness, logits), gamma (learning rate per opportunity),
        planted, fine_kcs (for Coarse KCs: the merged Fine KCs). Coarse KCs have NaN
        beta/gamma: the Coarse model is not the generating one.
    gains
        instrument, module, true_gain (mean ability change pre->post, logits),
        true_gain_sd, n_items, expected_pre (mean expected proportion correct, all
        learners), expected_post.
    surveys
        construct, true_change (latent change pre->post in SD of the pre latent),
        n_items, reverse_coded_items.
    pages
        page, module, first_position, hazard (probability that a learner of theta 0
        reaching the page leaves there), duration_factor (actual / planned time),
        planted.
    """

    learners: pd.DataFrame
    items: pd.DataFrame
    kcs: pd.DataFrame
    gains: pd.DataFrame
    surveys: pd.DataFrame
    pages: pd.DataFrame


@dataclass
class SimulatedCohort:
    """A simulated cohort: canonical tables with RAW learner ids, plus the truth.

    The tables have the canonical columns of ``data_schema/*.schema.json`` and the
    canonical dtypes, except that ``learner_id`` holds raw ids (``S00001``): the ingest
    adapters pseudonymise them when :meth:`write`'s exports are read back.
    """

    cohort: str
    attempts: pd.DataFrame
    attempt_kcs: pd.DataFrame
    assessments: pd.DataFrame
    surveys: pd.DataFrame
    learners: pd.DataFrame
    items: pd.DataFrame
    truth: Truth
    settings: dict = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """The canonical tables by name."""
        return {name: getattr(self, name) for name in TABLES}

    def describe(self) -> str:
        """One line per table with its size, and the planted problems."""
        lines = [f"SimulatedCohort {self.cohort!r} (seed {self.settings.get('seed')}, course {self.settings.get('course_version')})"]
        for name, df in self.tables.items():
            lines.append(f"  {name:<12} {len(df):>9,} rows")
        t = self.truth
        lines.append(
            f"  learners: {len(t.learners)} ({int(t.learners['dropped'].sum())} dropped); items: {len(t.items)}; "
            f"Fine KCs: {int((t.kcs['kc_model'] == 'Fine').sum())}; Coarse KCs: {int((t.kcs['kc_model'] == 'Coarse').sum())}"
        )
        planted = [
            f"{row.planted}: {row.id}"
            for df, col in ((t.items, "item_id"), (t.kcs, "kc"), (t.pages, "page"))
            for row in df.loc[df["planted"] != "", ["planted", col]].rename(columns={col: "id"}).itertuples()
        ]
        lines.append("  planted: " + ("; ".join(planted) if planted else "none"))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def write(self, directory: str | Path, *, formats: Iterable[str] = ("datashop",)) -> dict[str, Path]:
        """Write real export files for the ingest adapters; see :func:`research.simulate.exports.write_exports`."""
        from research.simulate.exports import write_exports

        return write_exports(self, directory, formats=formats)


# ----------------------------------------------------------------------------------------
# helpers


def _canonical(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Order ``frame``'s columns as the schema's and give them the canonical dtypes."""
    out = {}
    n = len(frame)
    for field in load_schema(table).fields:
        name, dtype = field.name, PANDAS_TYPES[field.type]
        if name in frame.columns:
            col = frame[name]
            out[name] = col.astype(dtype) if str(col.dtype) != dtype else col
        else:
            out[name] = pd.Series(pd.array([pd.NA] * n, dtype=dtype) if dtype not in {"float64", "datetime64[us]"} else np.full(n, np.nan), dtype=dtype)
    return pd.DataFrame(out).reset_index(drop=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random 32-hex-digit ids (like DataShop's transaction and session ids)."""
    if n == 0:
        return np.array([], dtype=object)
    raw = rng.bytes(16 * n).hex().encode("ascii")
    return np.frombuffer(raw, dtype="S32").astype(str).astype(object)


def _raw_ids(start: int, n: int) -> np.ndarray:
    width = max(5, len(str(start + n - 1)))
    return ("S" + pd.Series(np.arange(start, start + n)).astype(str).str.zfill(width)).to_numpy(dtype=object)


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_rate(name: str, value: float, upper: float = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, {upper}); got {value!r}") from None
    if not 0.0 <= v < upper:
        raise ConfigError(f"{name} must be a number in [0, {upper}); got {value!r}")
    return v


# ----------------------------------------------------------------------------------------
# the course design (items, KCs, pages with their true parameters)


def _planted_module(M: int) -> dict[str, int]:
    """Module index of each planted problem (with fewer modules they move to the last one)."""
    return {
        "too_easy": 0,
        "miskeyed": min(1, M - 1),
        "no_learning_kc": min(1, M - 1),
        "dif": min(2, M - 1),
        "dropout_page": min(2, M - 1),
        "slow_page": min(3, M - 1),
    }


_PLANTED_CORE = {"too_easy": 1, "miskeyed": 3, "dif": 4}  # core item index within its module
_NO_LEARNING_K = 2  # KC index of the no-learning KC within its module
_MULTI_KC = {5: 0, 7: 1}  # multi-KC core items: core index -> extra KC index (within the module)


def _course_sequence(M: int, P: int, K: int, items_per_page: int, practice_per_kc: int, planted: bool) -> pd.DataFrame:
    """The course's positions in order: module ``m``, page ``p``, kind (0 core, 1 practice), KC indexes, core index, ``i`` on its page."""
    n_core = P * items_per_page
    no_learning_m = _planted_module(M)["no_learning_kc"]
    rows = []
    for m in range(M):
        for j in range(n_core):
            k = j % K
            kcs = [k]
            if j in _MULTI_KC and _MULTI_KC[j] != k and not (planted and m == no_learning_m and _NO_LEARNING_K in (k, _MULTI_KC[j])):
                kcs.append(_MULTI_KC[j])
            rows.append({"m": m, "p": j // items_per_page, "kind": 0, "order": j, "kcs": kcs, "core": j})
        for k in range(K):
            first_page = k // items_per_page if k < n_core else P - 1
            for r in range(practice_per_kc):
                rows.append({"m": m, "p": min(first_page + 1 + r, P - 1), "kind": 1, "order": k * practice_per_kc + r, "kcs": [k], "core": -1})
    design = pd.DataFrame(rows).sort_values(["m", "p", "kind", "order"], kind="stable").reset_index(drop=True)
    design["i"] = design.groupby(["m", "p"]).cumcount() + 1
    return design


def _attractiveness(rng: np.random.Generator, true_key: np.ndarray) -> np.ndarray:
    """Distractor attractiveness per item and option (NaN for the key): three Dirichlet weights around the key."""
    T = true_key.size
    attract = rng.dirichlet([2.0, 2.0, 2.0], size=T)
    attract_full = np.full((T, 4), np.nan)
    for t_key in range(4):  # place the 3 distractor weights around the key
        sel = true_key == t_key
        cols = [c for c in range(4) if c != t_key]
        attract_full[np.ix_(sel, cols)] = attract[sel]
    return attract_full


def _plant_items(p: dict[str, np.ndarray], design: pd.DataFrame, Q: np.ndarray, beta: np.ndarray, gamma: np.ndarray,
                 nl: int, planted_module: dict[str, int], *, dif_variable: str, dif_focal: str, dif_reference: str,
                 dif_size: float) -> None:
    """Plant the too-easy, mis-keyed and DIF items and flatten the no-learning KC's items (``p`` changed in place)."""
    nominal_opp = np.cumsum(Q, axis=0) - Q  # nominal opportunity counts (no skipping) for the too-easy item

    def locate(label):
        m = planted_module[label]
        return int(np.flatnonzero((design["m"] == m).to_numpy() & (design["core"] == _PLANTED_CORE[label]).to_numpy())[0])

    t = locate("too_easy")
    ks = Q[t] > 0
    p["offset"][t] = float((beta[ks] + gamma[ks] * nominal_opp[t, ks]).sum()) - 3.6
    p["discrimination"][t] = 0.3
    p["planted"][t] = "too_easy"
    t = locate("miskeyed")
    distractors = [c for c in range(4) if c != p["true_key"][t]]
    p["course_key"][t] = distractors[int(np.nanargmax(p["attract"][t, distractors]))]
    p["discrimination"][t] = -1.0
    p["planted"][t] = "miskeyed"
    # the no-learning KC's items carry no item deviation: its learning curve is truly flat
    p["offset"][Q[:, nl] > 0] = 0.0
    t = locate("dif")
    p["dif"][t] = dif_size
    p["dif_group"][t] = f"{dif_variable}={dif_focal}"
    p["dif_ref"][t] = dif_reference
    p["planted"][t] = "dif"


def _kcs_truth(kc_names: list[str], coarse_of: dict[str, str], beta: np.ndarray, gamma: np.ndarray,
               kc_planted: np.ndarray) -> pd.DataFrame:
    """The true KC table: Fine KCs with beta and gamma, Coarse KCs with the Fine ones they merge."""
    coarse_names = list(dict.fromkeys(coarse_of.values()))
    return pd.concat(
        [
            pd.DataFrame({"kc_model": "Fine", "kc": kc_names, "beta": beta, "gamma": gamma, "planted": kc_planted, "fine_kcs": kc_names}),
            pd.DataFrame(
                {
                    "kc_model": "Coarse",
                    "kc": coarse_names,
                    "beta": np.nan,
                    "gamma": np.nan,
                    "planted": "",
                    "fine_kcs": ["~~".join(k for k in kc_names if coarse_of[k] == c) for c in coarse_names],
                }
            ),
        ],
        ignore_index=True,
    )


def _pages_truth(items: pd.DataFrame, planted: bool, planted_module: dict[str, int]) -> pd.DataFrame:
    """The true page table: first position, drop-out hazard and duration factor (the planted pages)."""
    page_names = list(dict.fromkeys(items["page"]))
    pages = pd.DataFrame({"page": page_names})
    pages["module"] = pages["page"].str.split(".").str[0]
    pages["first_position"] = items.groupby("page", sort=False)["position"].min().reindex(page_names).to_numpy()
    pages["hazard"] = 0.0
    pages["duration_factor"] = 1.0
    pages["planted"] = ""
    if planted:
        dp = f"M{planted_module['dropout_page'] + 1}.P2"
        sp = f"M{planted_module['slow_page'] + 1}.P1"
        pages.loc[pages["page"] == dp, ["hazard", "planted"]] = [0.18, "dropout_page"]
        pages.loc[pages["page"] == sp, ["duration_factor", "planted"]] = [3.0, "slow_page"]
    return pages


def _widen_pairs(beta: np.ndarray, gamma: np.ndarray, groups: list[list[int]], gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep the two KCs of each pair at least ``gap`` logits apart at every opportunity.

    Their easiness is pushed apart about its mean until it differs by ``gap``, and the
    easier KC takes the larger of the two learning rates (so learning never closes the gap).
    """
    beta, gamma = beta.copy(), gamma.copy()
    for g in groups:
        if len(g) != 2:
            continue
        a, b = g if beta[g[0]] <= beta[g[1]] else g[::-1]
        if beta[b] - beta[a] < gap:
            mid = (beta[a] + beta[b]) / 2
            beta[a], beta[b] = mid - gap / 2, mid + gap / 2
        if gamma[b] < gamma[a]:
            gamma[a], gamma[b] = gamma[b], gamma[a]
    return beta, gamma


def _design_course(
    rng: np.random.Generator,
    *,
    n_modules: int,
    pages_per_module: int,
    items_per_page: int,
    kcs_per_module: int,
    practice_per_kc: int,
    planted: bool,
    course_version: str,
    dif_variable: str,
    dif_focal: str,
    dif_reference: str,
    dif_size: float,
    fine_pair_gap: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The course with its true parameters: items, KCs and pages (see :class:`Truth`)."""
    M, K = n_modules, kcs_per_module
    planted_module = _planted_module(M)
    kc_names = [f"M{m + 1}-K{k + 1}" for m in range(M) for k in range(K)]
    kc_index = {name: i for i, name in enumerate(kc_names)}
    coarse_of = {f"M{m + 1}-K{k + 1}": f"M{m + 1}-C{k // 2 + 1}" for m in range(M) for k in range(K)}

    beta = rng.normal(0.2, 0.5, size=len(kc_names))
    gamma = rng.uniform(0.1, 0.4, size=len(kc_names))
    if fine_pair_gap:  # the Fine KCs a Coarse KC merges differ in easiness by at least the gap (no extra draws)
        beta, gamma = _widen_pairs(beta, gamma, [[kc_index[k] for k in kc_names if coarse_of[k] == c]
                                                 for c in dict.fromkeys(coarse_of.values())], fine_pair_gap)
    kc_planted = np.array([""] * len(kc_names), dtype=object)
    nl = -1
    if planted:
        nl = kc_index[f"M{planted_module['no_learning_kc'] + 1}-K{_NO_LEARNING_K + 1}"]
        beta[nl], gamma[nl], kc_planted[nl] = -0.4, 0.0, "no_learning_kc"

    design = _course_sequence(M, pages_per_module, K, items_per_page, practice_per_kc, planted)
    T = len(design)
    module = "M" + (design["m"] + 1).astype(str)
    page = module + ".P" + (design["p"] + 1).astype(str)
    fine_lists = [[f"M{m + 1}-K{k + 1}" for k in ks] for m, ks in zip(design["m"], design["kcs"])]

    true_key = rng.integers(0, 4, size=T)
    p = {"true_key": true_key, "attract": _attractiveness(rng, true_key), "course_key": true_key.copy()}
    planned = rng.choice([30.0, 45.0, 60.0, 90.0], size=T, p=[0.3, 0.35, 0.25, 0.1])
    p.update(offset=rng.normal(0.0, 0.3, size=T), discrimination=np.ones(T), planted=np.array([""] * T, dtype=object),
             dif=np.zeros(T), dif_group=np.array([""] * T, dtype=object), dif_ref=np.array([""] * T, dtype=object))
    Q = np.zeros((T, len(kc_names)))
    for t, ks in enumerate(fine_lists):
        Q[t, [kc_index[k] for k in ks]] = 1.0
    if planted:
        _plant_items(p, design, Q, beta, gamma, nl, planted_module, dif_variable=dif_variable, dif_focal=dif_focal,
                     dif_reference=dif_reference, dif_size=dif_size)

    items = pd.DataFrame(
        {
            "item_id": page + ".I" + design["i"].astype(str),
            "module": module,
            "page": page,
            "position": np.arange(1, T + 1),
            "version": course_version,
            "practice": design["kind"].to_numpy() == 1,
            "kc_fine": ["~~".join(ks) for ks in fine_lists],
            "kc_coarse": ["~~".join(dict.fromkeys(coarse_of[k] for k in ks)) for ks in fine_lists],
            "true_key": np.array(OPTIONS)[p["true_key"]],
            "course_key": np.array(OPTIONS)[p["course_key"]],
            **{f"attract_{o}": p["attract"][:, c] for c, o in enumerate(OPTIONS)},
            "planned_duration_s": planned,
            "item_offset": p["offset"],
            "discrimination": p["discrimination"],
            "planted": p["planted"],
            "dif_group": p["dif_group"],
            "dif_reference": p["dif_ref"],
            "dif_size": p["dif"],
        }
    )
    return items, _kcs_truth(kc_names, coarse_of, beta, gamma, kc_planted), _pages_truth(items, planted, planted_module)


# ----------------------------------------------------------------------------------------
# learners and their behaviour


def _simulate_learners(rng: np.random.Generator, n: int, id_start: int) -> pd.DataFrame:
    theta = rng.normal(0.0, 1.0, size=n)
    dm = 0.6 * theta + 0.8 * rng.normal(size=n)
    return pd.DataFrame(
        {
            "learner_id": _raw_ids(id_start, n),
            "theta": theta,
            "gender": rng.choice(["female", "male", "other"], size=n, p=[0.55, 0.42, 0.03]),
            "age_band": rng.choice(["18-29", "30-39", "40-49", "50-59", "60+"], size=n, p=[0.12, 0.28, 0.28, 0.22, 0.10]),
            "role": rng.choice(["employment officer", "team lead", "specialist"], size=n, p=[0.6, 0.15, 0.25]),
            "region": rng.choice(["North", "Central", "South", "West"], size=n, p=[0.2, 0.35, 0.3, 0.15]),
            "digital_maturity": np.where(dm < -0.5, "low", np.where(dm < 0.6, "medium", "high")),
        }
    )


def _start_seconds(start: str) -> float:
    """The cohort's start date as seconds since the epoch (UTC)."""
    try:
        t0 = pd.Timestamp(start)
    except (ValueError, TypeError):
        raise ConfigError(f"start must be a date like '2026-09-01'; got {start!r}") from None
    if t0.tzinfo is not None:
        t0 = t0.tz_convert("UTC").tz_localize(None)
    return t0.value / 1e9


@dataclass
class _Course:
    """The course as arrays by position in the sequence, for the practice loop."""

    item_kcs: list[list[int]]  # Fine KC indexes per position
    n_kcs: int
    beta: np.ndarray
    gamma: np.ndarray
    offset: np.ndarray
    disc: np.ndarray  # slope on theta (the mis-keyed item's learners answer a normal item)
    practice: np.ndarray
    planned: np.ndarray
    true_key: np.ndarray
    course_key: np.ndarray
    log_attract: np.ndarray
    dif_size: np.ndarray
    dif_focal: list[np.ndarray | None]  # per position: 1.0 for learners of the focal group of a DIF item
    module_idx: np.ndarray
    page_arr: np.ndarray
    page_rate: np.ndarray  # extra drop-out rate at the first item of a page
    dur_factor: np.ndarray
    first_of_page: np.ndarray
    first_of_module: np.ndarray
    last_of_module: np.ndarray
    modules: list[str]


def _course_arrays(items_t: pd.DataFrame, kcs_t: pd.DataFrame, pages_t: pd.DataFrame, learners_t: pd.DataFrame) -> _Course:
    fine = kcs_t[kcs_t["kc_model"] == "Fine"].reset_index(drop=True)
    kc_idx = {k: i for i, k in enumerate(fine["kc"])}
    attract = items_t[[f"attract_{o}" for o in OPTIONS]].to_numpy(float)
    dif_focal = []
    for g in items_t["dif_group"]:
        if g:
            var, val = g.split("=", 1)
            dif_focal.append((learners_t[var].to_numpy() == val).astype(float))
        else:
            dif_focal.append(None)
    module_idx = items_t["module"].to_numpy()
    page_arr = items_t["page"].to_numpy()
    page_info = pages_t.set_index("page")
    page_rate = -np.log1p(-page_info["hazard"].reindex(page_arr).to_numpy(float))
    first_of_page = np.r_[True, page_arr[1:] != page_arr[:-1]]
    return _Course(
        item_kcs=[[kc_idx[k] for k in s.split("~~")] for s in items_t["kc_fine"]],
        n_kcs=len(fine),
        beta=fine["beta"].to_numpy(float),
        gamma=fine["gamma"].to_numpy(float),
        offset=items_t["item_offset"].to_numpy(float),
        disc=np.where(items_t["planted"].to_numpy() == "miskeyed", 1.0, items_t["discrimination"].to_numpy(float)),
        practice=items_t["practice"].to_numpy(bool),
        planned=items_t["planned_duration_s"].to_numpy(float),
        true_key=items_t["true_key"].map({o: i for i, o in enumerate(OPTIONS)}).to_numpy(int),
        course_key=items_t["course_key"].map({o: i for i, o in enumerate(OPTIONS)}).to_numpy(int),
        log_attract=np.log(np.where(np.isnan(attract), 1.0, attract)),
        dif_size=items_t["dif_size"].to_numpy(float),
        dif_focal=dif_focal,
        module_idx=module_idx,
        page_arr=page_arr,
        page_rate=np.where(first_of_page, page_rate, 0.0),
        dur_factor=page_info["duration_factor"].reindex(page_arr).to_numpy(float),
        first_of_page=first_of_page,
        first_of_module=np.r_[True, module_idx[1:] != module_idx[:-1]],
        last_of_module=np.r_[module_idx[1:] != module_idx[:-1], True],
        modules=list(dict.fromkeys(module_idx)),
    )


@dataclass
class _Practice:
    """What the practice loop leaves: attempt columns in chunks, and each learner's and item's record."""

    chunks: dict[str, list[np.ndarray]]
    dropout_pos: np.ndarray  # position before which a learner left; 0 = never
    last_pos: np.ndarray
    course_start: np.ndarray
    module_end: np.ndarray  # learners x modules: when the module's post test was taken (NaN: not reached)
    mean_opp: np.ndarray
    exp_fac: np.ndarray
    n_att: np.ndarray


def _new_sessions(t: int, c: _Course, active: np.ndarray, clock: np.ndarray, session: np.ndarray, rng: np.random.Generator) -> None:
    """A new module starts on a later day, a new page sometimes after a break (clock and session in place)."""
    if c.first_of_module[t]:
        a = np.flatnonzero(active)
        if t > 0:
            days = np.floor(clock[a] / 86400.0) + rng.geometric(0.45, size=a.size)
            clock[a] = days * 86400.0 + rng.uniform(8 * 3600, 18 * 3600, size=a.size)
        session[a] += 1
    elif c.first_of_page[t]:
        a = np.flatnonzero(active)
        brk = rng.random(a.size) < 0.3
        b = a[brk]
        clock[b] += rng.uniform(1800, 2 * 86400, size=b.size)
        session[b] += 1


def _expected_facility(eta: np.ndarray, distract_logits: np.ndarray, key: int, ckey: int) -> float:
    """Model probability that a first attempt is marked correct (by the course's key), averaged over learners."""
    if key == ckey:
        return float(_sigmoid(eta).mean())
    dl = distract_logits.copy()
    dl[:, key] = -np.inf
    pr = np.exp(dl - dl.max(axis=1, keepdims=True))
    pr /= pr.sum(axis=1, keepdims=True)
    return float(((1 - _sigmoid(eta)) * pr[:, ckey]).mean())


def _answer_rounds(t: int, idx: np.ndarray, eta: np.ndarray, distract_logits: np.ndarray, key: int, ckey: int,
                   theta: np.ndarray, base_s: np.ndarray, clock: np.ndarray, rng: np.random.Generator, emit) -> None:
    """Hints and answers at position ``t`` until each learner's answer is marked correct.

    ``base_s`` is each learner's planned time for a first answer (planned time x page factor x speed).
    """
    m = idx.size
    tried = np.zeros((m, 4), bool)
    n_ans = np.zeros(m, int)
    n_hint = np.zeros(m, int)
    att = np.zeros(m, int)
    live = np.arange(m)
    while live.size:
        g = idx[live]
        ph = _sigmoid(-1.2 - 0.6 * theta[g] + 0.3 * n_ans[live]) * (n_ans[live] > 0) * (n_hint[live] < 3)
        is_hint = rng.random(live.size) < ph
        h = live[is_hint]
        if h.size:
            gh = idx[h]
            att[h] += 1
            n_hint[h] += 1
            dur = np.round(np.maximum(2.0, 6.0 * rng.lognormal(0, 0.4, size=h.size)), 1)
            clock[gh] += dur
            emit(gh, t, att[h].copy(), np.full(h.size, 2, np.int8), np.full(h.size, -1, np.int8), np.floor(clock[gh]), dur)
            clock[gh] += rng.exponential(2.0, size=h.size)
        a = live[~is_hint]
        if not a.size:
            live = h
            continue
        ga = idx[a]
        p = _sigmoid(eta[a] + 0.9 * n_ans[a] + 0.7 * n_hint[a])
        pick_key = (rng.random(a.size) < p) & ~tried[a, key]
        logits = distract_logits[a].copy()
        logits[:, key] = -np.inf
        logits[tried[a]] = -np.inf
        none_left = np.all(np.isinf(logits), axis=1)
        if none_left.any():
            logits[none_left] = np.where(tried[a[none_left]], -np.inf, 0.0)
        choice = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        choice = np.where(pick_key, key, choice)
        correct = choice == ckey
        tried[a, choice] = True
        att[a] += 1
        base = base_s[a] * np.where(n_ans[a] == 0, 1.0, 0.45)
        dur = np.round(np.maximum(2.0, base * rng.lognormal(0, 0.45, size=a.size)), 1)
        n_ans[a] += 1
        clock[ga] += dur
        emit(ga, t, att[a].copy(), correct.astype(np.int8), choice.astype(np.int8), np.floor(clock[ga]), dur)
        clock[ga] += rng.exponential(3.0, size=a.size)
        live = np.concatenate([h, a[~correct]])


def _practise(c: _Course, theta: np.ndarray, rng: np.random.Generator, *, t0_s: float, skip_rate: float,
              base_hazard: float) -> _Practice:
    """Every learner through the course sequence: sessions, drop-out, skipped practice, attempts."""
    n, T = theta.size, len(c.item_kcs)
    base_rate = -np.log1p(-base_hazard)
    opp = np.zeros((n, c.n_kcs))
    active = np.ones(n, bool)
    clock = t0_s + rng.uniform(0, 5, size=n).astype(int) * 86400.0 + rng.uniform(8 * 3600, 17 * 3600, size=n)
    session = np.zeros(n, int)
    speed = np.exp(-0.15 * theta)  # stronger learners are a little faster
    choosiness = np.exp(-0.5 * theta)  # weaker learners prefer attractive distractors more
    pr = _Practice(chunks={k: [] for k in ("lrn", "pos", "att", "out", "resp", "ts", "dur", "sess")},
                   dropout_pos=np.zeros(n, int), last_pos=np.zeros(n, int), course_start=clock.copy(),
                   module_end=np.full((n, len(c.modules)), np.nan), mean_opp=np.full(T, np.nan),
                   exp_fac=np.full(T, np.nan), n_att=np.zeros(T, int))

    def emit(lrn, t, att, out, resp, ts, dur):
        for name, values in (("lrn", lrn), ("pos", np.full(lrn.size, t, dtype=np.int32)), ("att", att), ("out", out),
                             ("resp", resp), ("ts", ts), ("dur", dur), ("sess", session[lrn].copy())):
            pr.chunks[name].append(values)

    for t in range(T):
        _new_sessions(t, c, active, clock, session, rng)
        # drop-out before the item
        rate = (base_rate + c.page_rate[t]) * np.exp(-0.7 * theta)
        leave = active & (rng.random(n) < -np.expm1(-rate))
        pr.dropout_pos[leave] = t + 1
        active &= ~leave
        idx = np.flatnonzero(active & ~(c.practice[t] & (rng.random(n) < skip_rate)))
        if idx.size == 0:
            continue
        pr.last_pos[idx] = t + 1
        ks = c.item_kcs[t]
        o = opp[np.ix_(idx, ks)]
        eta = c.disc[t] * theta[idx] + (c.beta[ks] + c.gamma[ks] * o).sum(axis=1) - c.offset[t]
        if c.dif_focal[t] is not None:
            eta = eta - c.dif_size[t] * c.dif_focal[t][idx]
        pr.mean_opp[t] = o.mean()
        pr.n_att[t] = idx.size
        distract_logits = choosiness[idx, None] * c.log_attract[t][None, :]
        pr.exp_fac[t] = _expected_facility(eta, distract_logits, c.true_key[t], c.course_key[t])
        _answer_rounds(t, idx, eta, distract_logits, c.true_key[t], c.course_key[t], theta,
                       c.planned[t] * c.dur_factor[t] * speed[idx], clock, rng, emit)
        opp[np.ix_(idx, ks)] += 1.0
        if c.last_of_module[t]:
            mi = c.modules.index(c.module_idx[t])
            pr.module_end[active, mi] = clock[active] + 60.0
    return pr


def _attempts_table(pr: _Practice, c: _Course, learners_t: pd.DataFrame, items_t: pd.DataFrame, rng: np.random.Generator,
                    *, cohort: str, course_version: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The canonical attempts in learner and time order, and each attempt's position in the course."""
    lrn = np.concatenate(pr.chunks["lrn"]) if pr.chunks["lrn"] else np.array([], int)
    pos = np.concatenate(pr.chunks["pos"]) if pr.chunks["pos"] else np.array([], np.int32)
    cat = {k: (np.concatenate(v) if v else np.array([])) for k, v in pr.chunks.items()}
    order = np.lexsort((cat["att"], pos, cat["ts"], lrn))
    lrn, pos = lrn[order], pos[order]
    att, out, resp, ts, dur, sess = (cat[k][order] for k in ("att", "out", "resp", "ts", "dur", "sess"))
    skey = lrn.astype(np.int64) * 100_000 + sess
    uniq, inv = np.unique(skey, return_inverse=True)
    session_hex = _hex_ids(rng, uniq.size)
    first_in_session = np.r_[True, skey[1:] != skey[:-1]]
    dur = np.where(first_in_session, np.nan, dur)  # like DataShop: no duration for a session's first transaction
    ids = learners_t["learner_id"].to_numpy(dtype=object)
    item_ids = items_t["item_id"].to_numpy(dtype=object)
    resp_labels = np.array([*OPTIONS, None], dtype=object)
    attempts = pd.DataFrame(
        {
            "cohort": cohort,
            "attempt_id": _hex_ids(rng, lrn.size),
            "learner_id": ids[lrn],
            "course_version": course_version,
            "session_id": session_hex[inv],
            "module": c.module_idx[pos],
            "page": c.page_arr[pos],
            "item_id": item_ids[pos],
            "step_id": item_ids[pos],
            "problem_view": 1,
            "attempt": att,
            "outcome": np.array(["incorrect", "correct", "hint"], dtype=object)[out.astype(int)],
            "response": resp_labels[resp.astype(int)],
            "timestamp": pd.to_datetime(ts, unit="s").astype("datetime64[us]") if ts.size else pd.Series([], dtype="datetime64[us]"),
            "duration_s": dur,
        }
    )
    return _canonical(attempts, "attempts"), pos


def _attempt_kcs_table(items_t: pd.DataFrame, attempt_ids: np.ndarray, pos: np.ndarray, cohort: str) -> pd.DataFrame:
    """One row per attempt x model x KC (vectorised by repeating rows)."""
    T = len(items_t)
    kc_long = []
    for model, col in (("Fine", "kc_fine"), ("Coarse", "kc_coarse")):
        lists = items_t[col].str.split("~~")
        kc_long.append(pd.DataFrame({"pos": np.repeat(np.arange(T), lists.str.len()), "kc_model": model, "kc": np.concatenate(lists.to_list())}))
    kc_long = pd.concat(kc_long, ignore_index=True).sort_values("pos", kind="stable").reset_index(drop=True)
    counts = kc_long.groupby("pos").size().reindex(np.arange(T), fill_value=0).to_numpy()
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    reps = counts[pos]
    row = np.repeat(np.arange(pos.size), reps)
    within = np.arange(row.size) - np.repeat(np.cumsum(reps) - reps, reps)
    src = np.repeat(starts[pos], reps) + within
    return _canonical(
        pd.DataFrame(
            {
                "cohort": cohort,
                "attempt_id": attempt_ids[row],
                "kc_model": kc_long["kc_model"].to_numpy(dtype=object)[src],
                "kc": kc_long["kc"].to_numpy(dtype=object)[src],
            }
        ),
        "attempt_kcs",
    )


def _long_responses(ids: np.ndarray, who: np.ndarray, q: np.ndarray, values: np.ndarray, when: np.ndarray,
                    **columns) -> pd.DataFrame:
    """Responses of the learners ``who`` (a mask) to the questions ``q``: one row per learner x question."""
    w = np.flatnonzero(who)
    k = q.size
    frame = {"learner_id": np.repeat(ids[w], k), **columns, "item_id": np.tile(q, w.size), "value": values[w].ravel()}
    frame["timestamp"] = pd.to_datetime(np.repeat(np.floor(when[w]), k), unit="s").astype("datetime64[us]")
    return pd.DataFrame(frame)


def _assessments_table(theta: np.ndarray, ids: np.ndarray, pr: _Practice, modules: list[str], rng: np.random.Generator,
                       cohort: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A pre test (everyone) and a post test (who finished the module) per module, and their true gains."""
    n = theta.size
    gains_rows, assess = [], []
    for mi, mod in enumerate(modules):
        n_items = 8
        b = rng.normal(0.0, 0.8, size=n_items)
        gain = _GAINS[mi % len(_GAINS)]
        indiv = gain + rng.normal(0.0, 0.3, size=n)
        p_pre = _sigmoid(theta[:, None] - b[None, :])
        p_post = _sigmoid(theta[:, None] + indiv[:, None] - b[None, :])
        pre = (rng.random((n, n_items)) < p_pre).astype(float)
        post = (rng.random((n, n_items)) < p_post).astype(float)
        took_post = ~np.isnan(pr.module_end[:, mi])
        instrument = f"{mod}_test"
        q = np.array([f"{mod}.T{j + 1}" for j in range(n_items)], dtype=object)
        for phase, scores, who, when in (
            ("pre", pre, np.ones(n, bool), pr.course_start - 1800.0),
            ("post", post, took_post, pr.module_end[:, mi]),
        ):
            frame = _long_responses(ids, who, q, scores, when, instrument=instrument, module=mod, phase=phase)
            assess.append(frame.rename(columns={"value": "score"}).assign(max_score=1.0))
        gains_rows.append(
            {
                "instrument": instrument,
                "module": mod,
                "true_gain": gain,
                "true_gain_sd": 0.3,
                "n_items": n_items,
                "expected_pre": float(p_pre.mean()),
                "expected_post": float(p_post.mean()),
            }
        )
    assessments = pd.concat(assess, ignore_index=True)
    assessments.insert(0, "cohort", cohort)
    return _canonical(assessments, "assessments"), pd.DataFrame(gains_rows)


def _surveys_table(theta: np.ndarray, ids: np.ndarray, pr: _Practice, rng: np.random.Generator,
                   cohort: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Likert 1-5 answers, pre for everyone, post for those who finished the course, and the true changes."""
    n = theta.size
    finished = pr.dropout_pos == 0
    course_end = pr.module_end[:, -1]  # defined for those who finished
    cuts = np.array([-1.6, -0.6, 0.4, 1.4])
    surv, surv_truth = [], []
    for construct, prefix, k, reverse, change, rho in _SURVEY:
        latent = rho * theta + np.sqrt(1 - rho**2) * rng.normal(size=n)
        shift = rng.normal(0.3, 0.3, size=k)
        rev = np.isin(np.arange(1, k + 1), reverse)
        q = np.array([f"{prefix}{j + 1}" for j in range(k)], dtype=object)
        for phase, lat, who, when in (
            ("pre", latent, np.ones(n, bool), pr.course_start - 900.0),
            ("post", latent + change + rng.normal(0, 0.2, size=n), finished, course_end + 600.0),
        ):
            ystar = lat[:, None] * 0.9 + shift[None, :] + rng.normal(0, 0.6, size=(n, k))
            resp_ = 1 + (ystar[:, :, None] > cuts).sum(axis=2)
            resp_ = np.where(rev[None, :], 6 - resp_, resp_)
            frame = _long_responses(ids, who, q, resp_, when, phase=phase, construct=construct)
            frame = frame.rename(columns={"value": "response"})
            frame = frame.assign(scale_min=1, scale_max=5, reverse_coded=np.tile(rev, int(who.sum())))
            surv.append(frame[["learner_id", "phase", "construct", "item_id", "response", "scale_min", "scale_max",
                               "reverse_coded", "timestamp"]])
        surv_truth.append({"construct": construct, "true_change": change, "n_items": k, "reverse_coded_items": "~~".join(q[rev])})
    surveys = pd.concat(surv, ignore_index=True)
    surveys.insert(0, "cohort", cohort)
    return _canonical(surveys, "surveys"), pd.DataFrame(surv_truth)


def _truth(items_t: pd.DataFrame, kcs_t: pd.DataFrame, pages_t: pd.DataFrame, learners_t: pd.DataFrame, c: _Course,
           pr: _Practice, gains: pd.DataFrame, surveys: pd.DataFrame) -> Truth:
    """The truth: the design's tables with what the learners did to them (difficulty, facility, drop-out)."""
    truth_items = items_t.copy()
    diff = np.empty(len(items_t))
    for t, ks in enumerate(c.item_kcs):
        mo = 0.0 if np.isnan(pr.mean_opp[t]) else pr.mean_opp[t]
        diff[t] = c.offset[t] - float((c.beta[ks] + c.gamma[ks] * mo).sum())
    at = list(truth_items.columns).index("discrimination") + 1
    for name, values in (("mean_opportunity", pr.mean_opp), ("difficulty", diff), ("expected_facility", pr.exp_fac), ("n_learners", pr.n_att)):
        truth_items.insert(at, name, values)
        at += 1
    truth_learners = learners_t.copy()
    truth_learners["last_position"] = pr.last_pos
    truth_learners["dropped"] = pr.dropout_pos > 0
    truth_learners["dropout_position"] = pd.array(np.where(pr.dropout_pos > 0, pr.dropout_pos, 0), dtype="Int64")
    truth_learners.loc[pr.dropout_pos == 0, "dropout_position"] = pd.NA
    return Truth(learners=truth_learners, items=truth_items, kcs=kcs_t.copy(), gains=gains, surveys=surveys, pages=pages_t.copy())


def _run(
    items_t: pd.DataFrame,
    kcs_t: pd.DataFrame,
    pages_t: pd.DataFrame,
    *,
    n_learners: int,
    seed: int,
    cohort: str,
    course_version: str,
    start: str,
    id_start: int,
    skip_rate: float,
    base_hazard: float,
    settings: dict,
) -> SimulatedCohort:
    """Learners through a designed course, by stage: learners, practice, attempts, tests, surveys, truth.

    Each stage draws from its own generator (spawned from ``seed``), so a stage's draws never move another's.
    """
    ss = np.random.SeedSequence(seed)
    r_learn, r_course, r_ids, r_tests, r_survey = (np.random.default_rng(s) for s in ss.spawn(5))
    t0_s = _start_seconds(start)
    learners_t = _simulate_learners(r_learn, n_learners, id_start)
    theta = learners_t["theta"].to_numpy()
    course = _course_arrays(items_t, kcs_t, pages_t, learners_t)
    pr = _practise(course, theta, r_course, t0_s=t0_s, skip_rate=skip_rate, base_hazard=base_hazard)

    attempts, pos = _attempts_table(pr, course, learners_t, items_t, r_ids, cohort=cohort, course_version=course_version)
    attempt_kcs = _attempt_kcs_table(items_t, attempts["attempt_id"].to_numpy(dtype=object), pos, cohort)
    ids = learners_t["learner_id"].to_numpy(dtype=object)
    assessments, gains = _assessments_table(theta, ids, pr, course.modules, r_tests, cohort)
    surveys, survey_truth = _surveys_table(theta, ids, pr, r_survey, cohort)

    learners = learners_t.drop(columns="theta").copy()
    learners.insert(0, "cohort", cohort)
    items = items_t.rename(columns={"course_key": "answer_key"}).copy()
    items.insert(0, "cohort", cohort)
    items["item_type"] = "multiple_choice"
    return SimulatedCohort(
        cohort=cohort,
        attempts=attempts,
        attempt_kcs=attempt_kcs,
        assessments=assessments,
        surveys=surveys,
        learners=_canonical(learners, "learners"),
        items=_canonical(items, "items"),
        truth=_truth(items_t, kcs_t, pages_t, learners_t, course, pr, gains, survey_truth),
        settings=dict(settings, package_version=__version__),
    )


# ----------------------------------------------------------------------------------------
# public API


_DESIGN_KEYS = ("n_modules", "pages_per_module", "items_per_page", "kcs_per_module", "practice_per_kc", "planted",
                "course_version", "dif_variable", "dif_focal", "dif_reference", "dif_size", "fine_pair_gap")


def _cohort_settings(*, n_learners, seed, cohort, n_modules, pages_per_module, items_per_page, kcs_per_module,
                     practice_per_kc, course_version, start, planted, skip_rate, base_hazard, dif_variable, dif_focal,
                     dif_reference, dif_size, fine_pair_gap=None) -> dict:
    """:func:`simulate_cohort`'s arguments checked, as the settings recorded with the cohort."""
    n_learners = _check_int("n_learners", n_learners, 1)
    seed = _check_int("seed", seed, 0)
    n_modules = _check_int("n_modules", n_modules, 1)
    pages_per_module = _check_int("pages_per_module", pages_per_module, 1)
    items_per_page = _check_int("items_per_page", items_per_page, 1)
    kcs_per_module = _check_int("kcs_per_module", kcs_per_module, 1)
    practice_per_kc = _check_int("practice_per_kc", practice_per_kc, 0)
    skip_rate = _check_rate("skip_rate", skip_rate)
    base_hazard = _check_rate("base_hazard", base_hazard, 0.5)
    if fine_pair_gap is not None:
        try:
            fine_pair_gap = float(fine_pair_gap)
        except (TypeError, ValueError):
            raise ConfigError(f"fine_pair_gap must be a number of logits >= 0 or None; got {fine_pair_gap!r}") from None
        if not fine_pair_gap >= 0:
            raise ConfigError(f"fine_pair_gap must be a number of logits >= 0 or None; got {fine_pair_gap!r}")
    if kcs_per_module > pages_per_module * items_per_page:
        raise ConfigError(
            f"kcs_per_module={kcs_per_module} exceeds the core items per module "
            f"(pages_per_module * items_per_page = {pages_per_module * items_per_page}); every KC needs a core item"
        )
    if planted and (pages_per_module < 2 or pages_per_module * items_per_page < 6 or kcs_per_module < 3):
        raise ConfigError(
            "planted=True needs pages_per_module >= 2, pages_per_module * items_per_page >= 6 and kcs_per_module >= 3; "
            f"got pages_per_module={pages_per_module}, items_per_page={items_per_page}, kcs_per_module={kcs_per_module} "
            "(or pass planted=False)"
        )
    valid_dif = ("gender", "age_band", "role", "region", "digital_maturity")
    if dif_variable not in valid_dif:
        raise ConfigError(f"dif_variable {dif_variable!r} is not a learner attribute; valid: {', '.join(valid_dif)}")
    for name, value in (("cohort", cohort), ("course_version", course_version)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty string; got {value!r}")
    return {
        "n_learners": n_learners,
        "seed": seed,
        "cohort": cohort,
        "n_modules": n_modules,
        "pages_per_module": pages_per_module,
        "items_per_page": items_per_page,
        "kcs_per_module": kcs_per_module,
        "practice_per_kc": practice_per_kc,
        "course_version": course_version,
        "start": str(start),
        "planted": bool(planted),
        "skip_rate": skip_rate,
        "base_hazard": base_hazard,
        "dif_variable": dif_variable,
        "dif_focal": dif_focal,
        "dif_reference": dif_reference,
        "dif_size": float(dif_size),
        **({"fine_pair_gap": fine_pair_gap} if fine_pair_gap else {}),  # recorded only when set
    }


def _designed_course(settings: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The course of checked settings with its true parameters (items, KCs, pages), drawn from its own seed."""
    design_rng = np.random.default_rng(np.random.SeedSequence([settings["seed"], 7]))
    return _design_course(design_rng, **{k: settings.get(k) for k in _DESIGN_KEYS})


def _first_cohort(items_t: pd.DataFrame, kcs_t: pd.DataFrame, pages_t: pd.DataFrame, settings: dict, *,
                  start) -> SimulatedCohort:
    """The learners of checked settings (raw ids from ``S00001``) through the designed course."""
    return _run(
        items_t,
        kcs_t,
        pages_t,
        n_learners=settings["n_learners"],
        seed=settings["seed"],
        cohort=settings["cohort"],
        course_version=settings["course_version"],
        start=start,
        id_start=1,
        skip_rate=settings["skip_rate"],
        base_hazard=settings["base_hazard"],
        settings=settings,
    )


def _with_wave_survey(sim: SimulatedCohort, *, seed: int, planted: bool) -> SimulatedCohort:
    """``sim`` with the three-wave survey in place of the pre/post one (it lives in research.simulate.surveys)."""
    from research.simulate.surveys import with_survey_waves

    return with_survey_waves(sim, seed=seed, planted=planted)


def simulate_cohort(
    *, n_learners: int = 400, seed: int = 0, cohort: str = "demo", n_modules: int = 4, pages_per_module: int = 3,
    items_per_page: int = 3, kcs_per_module: int = 4, practice_per_kc: int = 2, course_version: str = "v1",
    start: str = "2026-09-01", planted: bool = True, skip_rate: float = 0.1, base_hazard: float = 0.002,
    dif_variable: str = "gender", dif_focal: str = "female", dif_reference: str = "male", dif_size: float = 1.2,
    survey_waves: bool = False, fine_pair_gap: float | None = None,
) -> SimulatedCohort:
    """Simulate one cohort of an online course with known truth.

    Parameters
    ----------
    n_learners
        Number of learners (raw ids ``S00001``...).
    seed
        Seed of every random draw: the same arguments give identical tables.
    cohort
        Cohort id written into every table.
    n_modules, pages_per_module, items_per_page
        Course shape: modules ``M1``.., pages ``M1.P1``.., and ``items_per_page`` core items
        per page. Practice items (see ``practice_per_kc``) are added to the pages after a
        KC's first item, so pages hold more items than ``items_per_page``.
    kcs_per_module
        Fine KCs per module (``M1-K1``..); core items cycle through them, two core items
        per module are multi-KC. The Coarse model merges pairs (``M1-C1`` = K1 + K2).
    practice_per_kc
        Optional practice items per Fine KC, so that each KC has 4-6 opportunities.
    course_version
        Course version of the cohort and version of every item.
    start
        Date the cohort starts (learners begin within the first five days), UTC.
    planted
        Plant the six problems of :data:`PLANTED` (recorded in ``truth``): a too-easy
        item (M1), a mis-keyed item and a no-learning KC (M2), a DIF item and a drop-out
        page (M3.P2), a page that takes three times its planned time (M4.P1). With fewer
        modules they move to the last module.
    skip_rate
        Probability that a learner skips an optional practice item.
    base_hazard
        Per-item probability that a learner of theta 0 drops out (weaker learners more:
        the hazard rate is multiplied by ``exp(-0.7 theta)``).
    dif_variable, dif_focal, dif_reference, dif_size
        The DIF item is ``dif_size`` logits harder for learners whose ``dif_variable`` is
        ``dif_focal`` than for equally able ones in ``dif_reference``.
    survey_waves
        Replace the pre/post survey by a three-wave one with planted problem questions
        (:func:`research.simulate.surveys.with_survey_waves`).
    fine_pair_gap
        Off by default (the Fine KCs' parameters are drawn freely). A number of logits: the
        two Fine KCs that each Coarse KC merges then differ in easiness (``beta``) by at
        least this much at every opportunity: pairs drawn closer are pushed apart about
        their mean, and the easier KC of a pair takes the larger of the pair's two learning
        rates, so practice never closes the gap. Nothing else changes and no extra random
        draws are made. The planted effect size for testing whether Learning Factors
        Analysis recovers the Fine split from Coarse (``tests/test_kcmodel_search.py``).

    Returns
    -------
    SimulatedCohort
        Canonical tables (raw learner ids) and :class:`Truth`.
    """
    settings = _cohort_settings(
        n_learners=n_learners, seed=seed, cohort=cohort, n_modules=n_modules, pages_per_module=pages_per_module,
        items_per_page=items_per_page, kcs_per_module=kcs_per_module, practice_per_kc=practice_per_kc,
        course_version=course_version, start=start, planted=planted, skip_rate=skip_rate, base_hazard=base_hazard,
        dif_variable=dif_variable, dif_focal=dif_focal, dif_reference=dif_reference, dif_size=dif_size,
        fine_pair_gap=fine_pair_gap,
    )
    items_t, kcs_t, pages_t = _designed_course(settings)
    sim = _first_cohort(items_t, kcs_t, pages_t, settings, start=start)
    return _with_wave_survey(sim, seed=seed, planted=bool(planted)) if survey_waves else sim


def _fixed_labels(fixed: Iterable[str] | str, previous: SimulatedCohort) -> tuple[str, ...]:
    """``fixed`` as labels of :data:`PLANTED` (short forms resolved), each planted in ``previous``."""
    if isinstance(fixed, str):
        fixed = (fixed,)
    fixed = tuple(dict.fromkeys(PLANTED_ALIASES.get(f, f) for f in fixed))
    unknown = [f for f in fixed if f not in PLANTED]
    if unknown:
        raise ConfigError(f"unknown planted problem(s) {', '.join(map(repr, unknown))} in fixed; valid: {', '.join(PLANTED)}")
    t = previous.truth
    present = set(t.items["planted"]) | set(t.kcs["planted"]) | set(t.pages["planted"])
    missing = [f for f in fixed if f not in present]
    if missing:
        raise ConfigError(
            f"fixed names {', '.join(map(repr, missing))}, which the previous cohort {previous.cohort!r} does not have; "
            f"its planted problems: {', '.join(sorted(present - {''})) or 'none'}"
        )
    return fixed


def _repair(label: str, items_t: pd.DataFrame, kcs_t: pd.DataFrame, pages_t: pd.DataFrame, *, new_version: str,
            rng: np.random.Generator) -> None:
    """Truly repair one planted problem in the design's tables (in place; see :func:`simulate_followup`)."""
    if label in ("too_easy", "miskeyed", "dif"):
        sel = items_t["planted"] == label
        items_t.loc[sel, "version"] = new_version
        if label == "too_easy":
            items_t.loc[sel, "item_offset"] = rng.normal(0.0, 0.3, size=int(sel.sum()))
            items_t.loc[sel, "discrimination"] = 1.0
        elif label == "miskeyed":
            items_t.loc[sel, "course_key"] = items_t.loc[sel, "true_key"]
            items_t.loc[sel, "discrimination"] = 1.0
        else:
            items_t.loc[sel, ["dif_group", "dif_reference"]] = ""
            items_t.loc[sel, "dif_size"] = 0.0
        items_t.loc[sel, "planted"] = ""
    elif label == "no_learning_kc":
        sel = kcs_t["planted"] == label
        kcs_t.loc[sel, "gamma"] = 0.25
        kcs_t.loc[sel, "planted"] = ""
    else:
        sel = pages_t["planted"] == label
        if label == "dropout_page":
            pages_t.loc[sel, "hazard"] = 0.0
        else:
            pages_t.loc[sel, "duration_factor"] = 1.0
        pages_t.loc[sel, "planted"] = ""


def simulate_followup(
    previous: SimulatedCohort,
    *,
    fixed: Iterable[str] = ("too_easy", "miskeyed"),
    seed: int = 1,
    cohort: str = "demo-2",
    n_learners: int | None = None,
    start: str | None = None,
) -> SimulatedCohort:
    """The next cohort of the same course, after a redesign fixed some planted problems.

    The course (items, KCs, pages and their true parameters) is that of ``previous``.
    For each label in ``fixed`` the planted problem is truly repaired: a fixed item gets
    version ``"v2"`` and normal parameters (the too-easy item a typical difficulty and
    discrimination 1, the mis-keyed item the right key, the DIF item no DIF); a fixed KC
    learns (gamma 0.25); a fixed drop-out page loses its extra hazard; a fixed slow page
    its extra time. Problems not listed persist. The learners are new (raw ids continue
    after the previous cohort's), drawn with ``seed``; the course version is the
    previous one with its number raised (``v1`` -> ``v2``) when any problem was fixed.

    ``fixed`` takes the labels of :data:`PLANTED`; ``no_learning``, ``dropout``, ``slow``
    and ``mis_keyed`` are accepted as short forms.

    Raises
    ------
    ConfigError
        When ``fixed`` names a problem that is not one of :data:`PLANTED`, or one that
        was not planted in ``previous``.
    """
    fixed = _fixed_labels(fixed, previous)
    t = previous.truth
    s = dict(previous.settings)
    old_version = s.get("course_version", "v1")
    new_version = old_version
    if fixed:
        digits = old_version.lstrip("v")
        new_version = f"v{int(digits) + 1}" if digits.isdigit() else f"{old_version}-2"
    items_t = t.items[[c for c in t.items.columns if c not in ("mean_opportunity", "difficulty", "expected_facility", "n_learners")]].copy()
    kcs_t = t.kcs.copy()
    pages_t = t.pages.copy()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    for label in fixed:
        _repair(label, items_t, kcs_t, pages_t, new_version=new_version, rng=rng)
    n = int(n_learners if n_learners is not None else s.get("n_learners", len(t.learners)))
    n = _check_int("n_learners", n, 1)
    seed = _check_int("seed", seed, 0)
    if start is None:
        start = str((pd.Timestamp(s.get("start", "2026-09-01")) + pd.DateOffset(months=4)).date())
    last = previous.truth.learners["learner_id"].str.slice(1).astype(int).max()
    settings = dict(s, n_learners=n, seed=seed, cohort=cohort, course_version=new_version, start=str(start), followup_of=previous.cohort, fixed=list(fixed))
    return _run(
        items_t,
        kcs_t,
        pages_t,
        n_learners=n,
        seed=seed,
        cohort=cohort,
        course_version=new_version,
        start=start,
        id_start=int(last) + 1,
        skip_rate=s.get("skip_rate", 0.1),
        base_hazard=s.get("base_hazard", 0.002),
        settings=settings,
    )
