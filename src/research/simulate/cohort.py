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
    n_core = pages_per_module * items_per_page
    M, P, K = n_modules, pages_per_module, kcs_per_module
    planted_module = {  # module index of each planted problem
        "too_easy": 0,
        "miskeyed": min(1, M - 1),
        "no_learning_kc": min(1, M - 1),
        "dif": min(2, M - 1),
        "dropout_page": min(2, M - 1),
        "slow_page": min(3, M - 1),
    }
    planted_core = {"too_easy": 1, "miskeyed": 3, "dif": 4}  # core item index within its module
    no_learning_k = 2  # KC index within its module
    # multi-KC core items: core index -> extra KC index (within the module)
    multi = {5: 0, 7: 1}

    kc_names = [f"M{m + 1}-K{k + 1}" for m in range(M) for k in range(K)]
    kc_index = {name: i for i, name in enumerate(kc_names)}
    coarse_of = {f"M{m + 1}-K{k + 1}": f"M{m + 1}-C{k // 2 + 1}" for m in range(M) for k in range(K)}

    beta = rng.normal(0.2, 0.5, size=len(kc_names))
    gamma = rng.uniform(0.1, 0.4, size=len(kc_names))
    if fine_pair_gap:  # the Fine KCs a Coarse KC merges differ in easiness by at least the gap (no extra draws)
        beta, gamma = _widen_pairs(beta, gamma, [[kc_index[k] for k in kc_names if coarse_of[k] == c]
                                                 for c in dict.fromkeys(coarse_of.values())], fine_pair_gap)
    kc_planted = np.array([""] * len(kc_names), dtype=object)
    if planted:
        j = kc_index[f"M{planted_module['no_learning_kc'] + 1}-K{no_learning_k + 1}"]
        beta[j], gamma[j], kc_planted[j] = -0.4, 0.0, "no_learning_kc"

    rows = []
    for m in range(M):
        for j in range(n_core):
            k = j % K
            kcs = [k]
            if j in multi and multi[j] != k and not (planted and m == planted_module["no_learning_kc"] and no_learning_k in (k, multi[j])):
                kcs.append(multi[j])
            rows.append({"m": m, "p": j // items_per_page, "kind": 0, "order": j, "kcs": kcs, "core": j})
        for k in range(K):
            first_page = k // items_per_page if k < n_core else P - 1
            for r in range(practice_per_kc):
                rows.append({"m": m, "p": min(first_page + 1 + r, P - 1), "kind": 1, "order": k * practice_per_kc + r, "kcs": [k], "core": -1})
    design = pd.DataFrame(rows).sort_values(["m", "p", "kind", "order"], kind="stable").reset_index(drop=True)
    design["i"] = design.groupby(["m", "p"]).cumcount() + 1
    T = len(design)
    module = "M" + (design["m"] + 1).astype(str)
    page = module + ".P" + (design["p"] + 1).astype(str)
    item_id = page + ".I" + design["i"].astype(str)
    fine_lists = [[f"M{m + 1}-K{k + 1}" for k in ks] for m, ks in zip(design["m"], design["kcs"])]
    kc_fine = ["~~".join(ks) for ks in fine_lists]
    kc_coarse = ["~~".join(dict.fromkeys(coarse_of[k] for k in ks)) for ks in fine_lists]

    true_key = rng.integers(0, 4, size=T)
    attract = rng.dirichlet([2.0, 2.0, 2.0], size=T)
    attract_full = np.full((T, 4), np.nan)
    for t_key in range(4):  # place the 3 distractor weights around the key
        sel = true_key == t_key
        cols = [c for c in range(4) if c != t_key]
        attract_full[np.ix_(sel, cols)] = attract[sel]
    course_key = true_key.copy()
    planned = rng.choice([30.0, 45.0, 60.0, 90.0], size=T, p=[0.3, 0.35, 0.25, 0.1])
    offset = rng.normal(0.0, 0.3, size=T)
    discrimination = np.ones(T)
    item_planted = np.array([""] * T, dtype=object)
    dif = np.zeros(T)
    dif_group = np.array([""] * T, dtype=object)
    dif_ref = np.array([""] * T, dtype=object)

    # nominal opportunity counts (no skipping) for placing the too-easy item's difficulty
    Q = np.zeros((T, len(kc_names)))
    for t, ks in enumerate(fine_lists):
        Q[t, [kc_index[k] for k in ks]] = 1.0
    nominal_opp = np.cumsum(Q, axis=0) - Q
    if planted:
        def locate(label):
            m = planted_module[label]
            return int(np.flatnonzero((design["m"] == m).to_numpy() & (design["core"] == planted_core[label]).to_numpy())[0])

        t = locate("too_easy")
        ks = Q[t] > 0
        offset[t] = float((beta[ks] + gamma[ks] * nominal_opp[t, ks]).sum()) - 3.6
        discrimination[t] = 0.3
        item_planted[t] = "too_easy"
        t = locate("miskeyed")
        distractors = [c for c in range(4) if c != true_key[t]]
        course_key[t] = distractors[int(np.nanargmax(attract_full[t, distractors]))]
        discrimination[t] = -1.0
        item_planted[t] = "miskeyed"
        # the no-learning KC's items carry no item deviation: its learning curve is truly flat
        nl = kc_index[f"M{planted_module['no_learning_kc'] + 1}-K{no_learning_k + 1}"]
        offset[Q[:, nl] > 0] = 0.0
        t = locate("dif")
        dif[t] = dif_size
        dif_group[t] = f"{dif_variable}={dif_focal}"
        dif_ref[t] = dif_reference
        item_planted[t] = "dif"

    items = pd.DataFrame(
        {
            "item_id": item_id,
            "module": module,
            "page": page,
            "position": np.arange(1, T + 1),
            "version": course_version,
            "practice": design["kind"].to_numpy() == 1,
            "kc_fine": kc_fine,
            "kc_coarse": kc_coarse,
            "true_key": np.array(OPTIONS)[true_key],
            "course_key": np.array(OPTIONS)[course_key],
            **{f"attract_{o}": attract_full[:, c] for c, o in enumerate(OPTIONS)},
            "planned_duration_s": planned,
            "item_offset": offset,
            "discrimination": discrimination,
            "planted": item_planted,
            "dif_group": dif_group,
            "dif_reference": dif_ref,
            "dif_size": dif,
        }
    )
    coarse_names = list(dict.fromkeys(coarse_of.values()))
    kcs = pd.concat(
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
    page_names = list(dict.fromkeys(page))
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
    return items, kcs, pages


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
    ss = np.random.SeedSequence(seed)
    r_learn, r_course, r_ids, r_tests, r_survey = (np.random.default_rng(s) for s in ss.spawn(5))
    try:
        t0 = pd.Timestamp(start)
    except (ValueError, TypeError):
        raise ConfigError(f"start must be a date like '2026-09-01'; got {start!r}") from None
    if t0.tzinfo is not None:
        t0 = t0.tz_convert("UTC").tz_localize(None)
    t0_s = t0.value / 1e9

    learners_t = _simulate_learners(r_learn, n_learners, id_start)
    n = n_learners
    theta = learners_t["theta"].to_numpy()

    fine = kcs_t[kcs_t["kc_model"] == "Fine"].reset_index(drop=True)
    kc_idx = {k: i for i, k in enumerate(fine["kc"])}
    beta = fine["beta"].to_numpy(float)
    gamma = fine["gamma"].to_numpy(float)
    T = len(items_t)
    item_kcs = [[kc_idx[k] for k in s.split("~~")] for s in items_t["kc_fine"]]
    offset = items_t["item_offset"].to_numpy(float)
    disc = np.where(items_t["planted"].to_numpy() == "miskeyed", 1.0, items_t["discrimination"].to_numpy(float))
    practice = items_t["practice"].to_numpy(bool)
    planned = items_t["planned_duration_s"].to_numpy(float)
    true_key = items_t["true_key"].map({o: i for i, o in enumerate(OPTIONS)}).to_numpy(int)
    course_key = items_t["course_key"].map({o: i for i, o in enumerate(OPTIONS)}).to_numpy(int)
    attract = items_t[[f"attract_{o}" for o in OPTIONS]].to_numpy(float)
    log_attract = np.log(np.where(np.isnan(attract), 1.0, attract))
    dif_size = items_t["dif_size"].to_numpy(float)
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
    first_of_module = np.r_[True, module_idx[1:] != module_idx[:-1]]
    last_of_module = np.r_[module_idx[1:] != module_idx[:-1], True]
    page_rate = np.where(first_of_page, page_rate, 0.0)
    dur_factor = page_info["duration_factor"].reindex(page_arr).to_numpy(float)
    modules = list(dict.fromkeys(module_idx))
    base_rate = -np.log1p(-base_hazard)

    opp = np.zeros((n, len(fine)))
    active = np.ones(n, bool)
    dropout_pos = np.zeros(n, int)  # 0 = never
    last_pos = np.zeros(n, int)
    clock = t0_s + r_course.uniform(0, 5, size=n).astype(int) * 86400.0 + r_course.uniform(8 * 3600, 17 * 3600, size=n)
    course_start = clock.copy()
    session = np.zeros(n, int)
    module_end = np.full((n, len(modules)), np.nan)
    speed = np.exp(-0.15 * theta)  # stronger learners are a little faster
    choosiness = np.exp(-0.5 * theta)  # weaker learners prefer attractive distractors more

    mean_opp = np.full(T, np.nan)
    exp_fac = np.full(T, np.nan)
    n_att = np.zeros(T, int)
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in ("lrn", "pos", "att", "out", "resp", "ts", "dur", "sess")}

    def emit(lrn, t, att, out, resp, ts, dur):
        chunks["lrn"].append(lrn)
        chunks["pos"].append(np.full(lrn.size, t, dtype=np.int32))
        chunks["att"].append(att)
        chunks["out"].append(out)
        chunks["resp"].append(resp)
        chunks["ts"].append(ts)
        chunks["dur"].append(dur)
        chunks["sess"].append(session[lrn].copy())

    for t in range(T):
        # sessions: a new module starts on a later day, a new page sometimes after a break
        if first_of_module[t]:
            a = np.flatnonzero(active)
            if t > 0:
                days = np.floor(clock[a] / 86400.0) + r_course.geometric(0.45, size=a.size)
                clock[a] = days * 86400.0 + r_course.uniform(8 * 3600, 18 * 3600, size=a.size)
            session[a] += 1
        elif first_of_page[t]:
            a = np.flatnonzero(active)
            brk = r_course.random(a.size) < 0.3
            b = a[brk]
            clock[b] += r_course.uniform(1800, 2 * 86400, size=b.size)
            session[b] += 1
        # drop-out before the item
        rate = (base_rate + page_rate[t]) * np.exp(-0.7 * theta)
        leave = active & (r_course.random(n) < -np.expm1(-rate))
        dropout_pos[leave] = t + 1
        active &= ~leave
        do = active & ~(practice[t] & (r_course.random(n) < skip_rate))
        idx = np.flatnonzero(do)
        if idx.size == 0:
            continue
        last_pos[idx] = t + 1
        ks = item_kcs[t]
        o = opp[np.ix_(idx, ks)]
        eta = disc[t] * theta[idx] + (beta[ks] + gamma[ks] * o).sum(axis=1) - offset[t]
        if dif_focal[t] is not None:
            eta = eta - dif_size[t] * dif_focal[t][idx]
        mean_opp[t] = o.mean()
        n_att[t] = idx.size
        key, ckey = true_key[t], course_key[t]
        distract_logits = choosiness[idx, None] * log_attract[t][None, :]
        if key == ckey:
            exp_fac[t] = _sigmoid(eta).mean()
        else:
            dl = distract_logits.copy()
            dl[:, key] = -np.inf
            pr = np.exp(dl - dl.max(axis=1, keepdims=True))
            pr /= pr.sum(axis=1, keepdims=True)
            exp_fac[t] = ((1 - _sigmoid(eta)) * pr[:, ckey]).mean()

        m = idx.size
        tried = np.zeros((m, 4), bool)
        n_ans = np.zeros(m, int)
        n_hint = np.zeros(m, int)
        att = np.zeros(m, int)
        live = np.arange(m)
        while live.size:
            g = idx[live]
            th = theta[g]
            ph = _sigmoid(-1.2 - 0.6 * th + 0.3 * n_ans[live]) * (n_ans[live] > 0) * (n_hint[live] < 3)
            is_hint = r_course.random(live.size) < ph
            h = live[is_hint]
            if h.size:
                gh = idx[h]
                att[h] += 1
                n_hint[h] += 1
                dur = np.round(np.maximum(2.0, 6.0 * r_course.lognormal(0, 0.4, size=h.size)), 1)
                clock[gh] += dur
                emit(gh, t, att[h].copy(), np.full(h.size, 2, np.int8), np.full(h.size, -1, np.int8), np.floor(clock[gh]), dur)
                clock[gh] += r_course.exponential(2.0, size=h.size)
            a = live[~is_hint]
            if a.size:
                ga = idx[a]
                p = _sigmoid(eta[a] + 0.9 * n_ans[a] + 0.7 * n_hint[a])
                pick_key = (r_course.random(a.size) < p) & ~tried[a, key]
                logits = distract_logits[a].copy()
                logits[:, key] = -np.inf
                logits[tried[a]] = -np.inf
                none_left = np.all(np.isinf(logits), axis=1)
                if none_left.any():
                    logits[none_left] = np.where(tried[a[none_left]], -np.inf, 0.0)
                choice = np.argmax(logits + r_course.gumbel(size=logits.shape), axis=1)
                choice = np.where(pick_key, key, choice)
                correct = choice == ckey
                tried[a, choice] = True
                att[a] += 1
                base = planned[t] * dur_factor[t] * speed[ga] * np.where(n_ans[a] == 0, 1.0, 0.45)
                dur = np.round(np.maximum(2.0, base * r_course.lognormal(0, 0.45, size=a.size)), 1)
                n_ans[a] += 1
                clock[ga] += dur
                emit(ga, t, att[a].copy(), correct.astype(np.int8), choice.astype(np.int8), np.floor(clock[ga]), dur)
                clock[ga] += r_course.exponential(3.0, size=a.size)
                live = np.concatenate([h, a[~correct]])
            else:
                live = h
        opp[np.ix_(idx, ks)] += 1.0
        if last_of_module[t]:
            mi = modules.index(module_idx[t])
            module_end[active, mi] = clock[active] + 60.0

    # ---- attempts
    lrn = np.concatenate(chunks["lrn"]) if chunks["lrn"] else np.array([], int)
    pos = np.concatenate(chunks["pos"]) if chunks["pos"] else np.array([], np.int32)
    cat = {k: (np.concatenate(v) if v else np.array([])) for k, v in chunks.items()}
    order = np.lexsort((cat["att"], pos, cat["ts"], lrn))
    lrn, pos = lrn[order], pos[order]
    att, out, resp, ts, dur, sess = (cat[k][order] for k in ("att", "out", "resp", "ts", "dur", "sess"))
    skey = lrn.astype(np.int64) * 100_000 + sess
    uniq, inv = np.unique(skey, return_inverse=True)
    session_hex = _hex_ids(r_ids, uniq.size)
    first_in_session = np.r_[True, skey[1:] != skey[:-1]]
    dur = np.where(first_in_session, np.nan, dur)  # like DataShop: no duration for a session's first transaction
    ids = learners_t["learner_id"].to_numpy(dtype=object)
    item_ids = items_t["item_id"].to_numpy(dtype=object)
    resp_labels = np.array([*OPTIONS, None], dtype=object)
    attempts = pd.DataFrame(
        {
            "cohort": cohort,
            "attempt_id": _hex_ids(r_ids, lrn.size),
            "learner_id": ids[lrn],
            "course_version": course_version,
            "session_id": session_hex[inv],
            "module": module_idx[pos],
            "page": page_arr[pos],
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
    attempts = _canonical(attempts, "attempts")

    # ---- attempt_kcs: one row per attempt x model x KC (vectorised by repeating rows)
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
    attempt_kcs = _canonical(
        pd.DataFrame(
            {
                "cohort": cohort,
                "attempt_id": attempts["attempt_id"].to_numpy(dtype=object)[row],
                "kc_model": kc_long["kc_model"].to_numpy(dtype=object)[src],
                "kc": kc_long["kc"].to_numpy(dtype=object)[src],
            }
        ),
        "attempt_kcs",
    )

    # ---- assessments: a pre and a post test per module
    gains_rows, assess = [], []
    for mi, mod in enumerate(modules):
        n_items = 8
        b = r_tests.normal(0.0, 0.8, size=n_items)
        gain = _GAINS[mi % len(_GAINS)]
        indiv = gain + r_tests.normal(0.0, 0.3, size=n)
        p_pre = _sigmoid(theta[:, None] - b[None, :])
        p_post = _sigmoid(theta[:, None] + indiv[:, None] - b[None, :])
        pre = (r_tests.random((n, n_items)) < p_pre).astype(float)
        post = (r_tests.random((n, n_items)) < p_post).astype(float)
        took_post = ~np.isnan(module_end[:, mi])
        instrument = f"{mod}_test"
        q = np.array([f"{mod}.T{j + 1}" for j in range(n_items)], dtype=object)
        for phase, scores, who, when in (
            ("pre", pre, np.ones(n, bool), course_start - 1800.0),
            ("post", post, took_post, module_end[:, mi]),
        ):
            w = np.flatnonzero(who)
            assess.append(
                pd.DataFrame(
                    {
                        "learner_id": np.repeat(ids[w], n_items),
                        "instrument": instrument,
                        "module": mod,
                        "phase": phase,
                        "item_id": np.tile(q, w.size),
                        "score": scores[w].ravel(),
                        "max_score": 1.0,
                        "timestamp": pd.to_datetime(np.repeat(np.floor(when[w]), n_items), unit="s").astype("datetime64[us]"),
                    }
                )
            )
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
    assessments = _canonical(assessments, "assessments")

    # ---- surveys: Likert 1-5, pre for everyone, post for those who finished the course
    finished = dropout_pos == 0
    course_end = module_end[:, -1]  # defined for those who finished
    cuts = np.array([-1.6, -0.6, 0.4, 1.4])
    surv, surv_truth = [], []
    for construct, prefix, k, reverse, change, rho in _SURVEY:
        latent = rho * theta + np.sqrt(1 - rho**2) * r_survey.normal(size=n)
        shift = r_survey.normal(0.3, 0.3, size=k)
        rev = np.isin(np.arange(1, k + 1), reverse)
        q = np.array([f"{prefix}{j + 1}" for j in range(k)], dtype=object)
        for phase, lat, who, when in (
            ("pre", latent, np.ones(n, bool), course_start - 900.0),
            ("post", latent + change + r_survey.normal(0, 0.2, size=n), finished, course_end + 600.0),
        ):
            ystar = lat[:, None] * 0.9 + shift[None, :] + r_survey.normal(0, 0.6, size=(n, k))
            resp_ = 1 + (ystar[:, :, None] > cuts).sum(axis=2)
            resp_ = np.where(rev[None, :], 6 - resp_, resp_)
            w = np.flatnonzero(who)
            surv.append(
                pd.DataFrame(
                    {
                        "learner_id": np.repeat(ids[w], k),
                        "phase": phase,
                        "construct": construct,
                        "item_id": np.tile(q, w.size),
                        "response": resp_[w].ravel(),
                        "scale_min": 1,
                        "scale_max": 5,
                        "reverse_coded": np.tile(rev, w.size),
                        "timestamp": pd.to_datetime(np.repeat(np.floor(when[w]), k), unit="s").astype("datetime64[us]"),
                    }
                )
            )
        surv_truth.append({"construct": construct, "true_change": change, "n_items": k, "reverse_coded_items": "~~".join(q[rev])})
    surveys = pd.concat(surv, ignore_index=True)
    surveys.insert(0, "cohort", cohort)
    surveys = _canonical(surveys, "surveys")

    # ---- learners and items tables
    learners = learners_t.drop(columns="theta").copy()
    learners.insert(0, "cohort", cohort)
    learners = _canonical(learners, "learners")
    items = items_t.rename(columns={"course_key": "answer_key"}).copy()
    items.insert(0, "cohort", cohort)
    items["item_type"] = "multiple_choice"
    items = _canonical(items, "items")

    # ---- truth
    truth_items = items_t.copy()
    diff = np.empty(T)
    for t, ks in enumerate(item_kcs):
        mo = 0.0 if np.isnan(mean_opp[t]) else mean_opp[t]
        diff[t] = offset[t] - float((beta[ks] + gamma[ks] * mo).sum())
    cols = list(truth_items.columns)
    at = cols.index("discrimination") + 1
    for name, values in (("mean_opportunity", mean_opp), ("difficulty", diff), ("expected_facility", exp_fac), ("n_learners", n_att)):
        truth_items.insert(at, name, values)
        at += 1
    truth_learners = learners_t.copy()
    truth_learners["last_position"] = last_pos
    truth_learners["dropped"] = dropout_pos > 0
    truth_learners["dropout_position"] = pd.array(np.where(dropout_pos > 0, dropout_pos, 0), dtype="Int64")
    truth_learners.loc[dropout_pos == 0, "dropout_position"] = pd.NA
    truth = Truth(
        learners=truth_learners,
        items=truth_items,
        kcs=kcs_t.copy(),
        gains=pd.DataFrame(gains_rows),
        surveys=pd.DataFrame(surv_truth),
        pages=pages_t.copy(),
    )
    return SimulatedCohort(
        cohort=cohort,
        attempts=attempts,
        attempt_kcs=attempt_kcs,
        assessments=assessments,
        surveys=surveys,
        learners=learners,
        items=items,
        truth=truth,
        settings=dict(settings, package_version=__version__),
    )


# ----------------------------------------------------------------------------------------
# public API


def simulate_cohort(
    *,
    n_learners: int = 400,
    seed: int = 0,
    cohort: str = "demo",
    n_modules: int = 4,
    pages_per_module: int = 3,
    items_per_page: int = 3,
    kcs_per_module: int = 4,
    practice_per_kc: int = 2,
    course_version: str = "v1",
    start: str = "2026-09-01",
    planted: bool = True,
    skip_rate: float = 0.1,
    base_hazard: float = 0.002,
    dif_variable: str = "gender",
    dif_focal: str = "female",
    dif_reference: str = "male",
    dif_size: float = 1.2,
    survey_waves: bool = False,
    fine_pair_gap: float | None = None,
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
        draws are made. The planted effect size for testing
        whether Learning Factors Analysis recovers the Fine split from Coarse
        (``tests/test_kcmodel_search.py``).

    Returns
    -------
    SimulatedCohort
        Canonical tables (raw learner ids) and :class:`Truth`.
    """
    n_learners = _check_int("n_learners", n_learners, 1)
    seed = _check_int("seed", seed, 0)
    n_modules = _check_int("n_modules", n_modules, 1)
    pages_per_module = _check_int("pages_per_module", pages_per_module, 1)
    items_per_page = _check_int("items_per_page", items_per_page, 1)
    kcs_per_module = _check_int("kcs_per_module", kcs_per_module, 1)
    practice_per_kc = _check_int("practice_per_kc", practice_per_kc, 0)
    skip_rate = _check_rate("skip_rate", skip_rate)
    if fine_pair_gap is not None:
        try:
            fine_pair_gap = float(fine_pair_gap)
        except (TypeError, ValueError):
            raise ConfigError(f"fine_pair_gap must be a number of logits >= 0 or None; got {fine_pair_gap!r}") from None
        if not fine_pair_gap >= 0:
            raise ConfigError(f"fine_pair_gap must be a number of logits >= 0 or None; got {fine_pair_gap!r}")
    base_hazard = _check_rate("base_hazard", base_hazard, 0.5)
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
    settings = {
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
    }
    if fine_pair_gap:
        settings["fine_pair_gap"] = fine_pair_gap
    design_rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    items_t, kcs_t, pages_t = _design_course(
        design_rng,
        n_modules=n_modules,
        pages_per_module=pages_per_module,
        items_per_page=items_per_page,
        kcs_per_module=kcs_per_module,
        practice_per_kc=practice_per_kc,
        planted=bool(planted),
        course_version=course_version,
        dif_variable=dif_variable,
        dif_focal=dif_focal,
        dif_reference=dif_reference,
        dif_size=float(dif_size),
        fine_pair_gap=fine_pair_gap,
    )
    sim = _run(
        items_t,
        kcs_t,
        pages_t,
        n_learners=n_learners,
        seed=seed,
        cohort=cohort,
        course_version=course_version,
        start=start,
        id_start=1,
        skip_rate=skip_rate,
        base_hazard=base_hazard,
        settings=settings,
    )
    if survey_waves:  # the three-wave survey lives in research.simulate.surveys
        from research.simulate.surveys import with_survey_waves

        sim = with_survey_waves(sim, seed=seed, planted=bool(planted))
    return sim


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
