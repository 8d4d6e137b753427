"""xAPI statement profiles: which statements are answers, hints, reveals or AU results, and
where the item, step, page, attempt, response and KCs come from.

A profile is a YAML file, parallel to the CSV column mapping. Built-in profiles live in
``research/ingest/profiles/``: ``torus``, ``openedx``, ``cmi5`` and ``adl`` (plain xAPI).

.. code-block:: yaml

    name: my-lms
    description: one line
    detect:                      # when sniffing picks this profile (any condition)
      extension_prefixes: [https://lms.example.org/ext/]
      categories: [https://example.org/category]
    correct: {rule: success}     # or {rule: scaled, threshold: 0.8} or {rule: raw_equals_max}
    fields:
      item: object.id            # a path, a list of paths (first present wins), or
                                 # {path: P, pattern: REGEX, last_segment: true} or
                                 # {template: "A {a}, P {p}", values: {a: P, p: P}}
      step: ...                  # default: the item
      page: ...
      module: ...
      attempt: ...               # default: counted per learner and step in time order
      session: context.registration
      response: result.response
      kcs: {Objectives: "context.extensions[https://lms.example.org/ext/objectives]"}
      kc_prefix: https://lms.example.org/kc/   # every context extension under it is a KC model
    assessment: {instrument: object.id, phase: post}
    rules:                       # first matching rule wins
      - name: graded
        kind: answer             # answer, hint, reveal, assessment or ignore
        verbs: [https://w3id.org/xapi/acrossx/verbs/evaluated]   # full verb IRIs
        verb_names: [answered]   # or the last segment of the IRI
        verb_contains: hint      # or a substring of the IRI
        object_types: [...]      # object.definition.type
        object_id_pattern: "/hint/[^/]*$"
        categories: [...]        # context.contextActivities.category ids (all needed)
        absent_categories: [...] # none of these may be there
        present: [paths]         # every path must be there
        absent: [paths]          # none may be there
        hints: path              # a list of hint ids inside the answer: one hint row each
        passed: true             # assessment: outcome when the statement has no score
        correct: {rule: ...}     # overrides the profile's correctness
        reason: why it is ignored (kind ignore)

Paths are dotted; a segment in brackets is taken literally (extension keys are IRIs full of
dots): ``context.extensions[http://oli.cmu.edu/extensions/part_id]``. Where a path meets a
list (``contextActivities.parent``), it follows the first element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from research.errors import ConfigError

__all__ = ["Correct", "FieldSpec", "Profile", "Rule", "categories_of", "get", "load_profile", "sniff_profile"]

PROFILE_DIR = Path(__file__).parent / "profiles"
BUILTIN = ("torus", "openedx", "cmi5", "adl")
KINDS = ("answer", "hint", "reveal", "assessment", "ignore")
TOP_KEYS = {"name", "description", "detect", "correct", "fields", "rules", "assessment"}
DETECT_KEYS = {"extension_prefixes", "categories"}
FIELD_KEYS = {"item", "step", "page", "module", "attempt", "session", "response", "kcs", "kc_prefix"}
RULE_KEYS = {"name", "kind", "verbs", "verb_names", "verb_contains", "object_types", "object_id_pattern", "categories",
             "absent_categories", "present", "absent", "hints", "passed", "correct", "reason"}
CORRECT_RULES = {"success", "scaled", "raw_equals_max"}
CORRECT_KEYS = {"rule", "threshold"}
SPEC_KEYS = {"path", "pattern", "last_segment", "template", "values", "extension_suffix"}
ASSESSMENT_KEYS = {"instrument", "phase"}
_SEGMENT = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")
_MISSING = object()


def parse_path(text: str, where: str) -> tuple[str, ...]:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: a path must be a non-empty string such as object.id, got {text!r}")
    parts, pos = [], 0
    for m in _SEGMENT.finditer(text):
        gap = text[pos:m.start()]
        if gap not in ("", "."):
            raise ConfigError(f"{where}: cannot read path {text!r} near {gap!r}; write extension IRIs in brackets: context.extensions[IRI]")
        parts.append(m.group(1) if m.group(1) is not None else m.group(2))
        pos = m.end()
    if text[pos:].strip("."):
        raise ConfigError(f"{where}: cannot read path {text!r}")
    return tuple(parts)


def get(statement, path: tuple[str, ...]):
    """The value at ``path`` in a statement, or None. A list is followed into its first element."""
    cur = statement
    for key in path:
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if not isinstance(cur, dict):
            return None
        cur = cur.get(key)
        if cur is None:
            return None
    return cur


def _unknown(keys, valid: set[str], where: str) -> None:
    bad = sorted(set(keys) - valid)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, bad))}; valid keys: {', '.join(sorted(valid))}")


def _as_list(value, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where}: expected a string or a list of strings, got {value!r}")


@dataclass
class FieldSpec:
    """Where one canonical field comes from."""

    paths: list[tuple[str, ...]] = field(default_factory=list)
    pattern: re.Pattern | None = None
    last_segment: bool = False
    template: str | None = None
    values: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    extension_suffix: str | None = None

    @classmethod
    def parse(cls, spec, where: str) -> FieldSpec:
        if isinstance(spec, (str, list)):
            return cls(paths=[parse_path(p, where) for p in _as_list(spec, where)])
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a path, a list of paths or a mapping with keys {', '.join(sorted(SPEC_KEYS))}; got {spec!r}")
        _unknown(spec, SPEC_KEYS, where)
        out = cls(paths=[parse_path(p, where) for p in _as_list(spec.get("path"), where + ".path")],
                  last_segment=bool(spec.get("last_segment", False)), extension_suffix=spec.get("extension_suffix"))
        if "pattern" in spec:
            try:
                out.pattern = re.compile(str(spec["pattern"]))
            except re.error as exc:
                raise ConfigError(f"{where}.pattern: not a regular expression ({exc})") from None
        if "template" in spec:
            out.template = str(spec["template"])
            values = spec.get("values")
            if not isinstance(values, dict) or not values:
                raise ConfigError(f"{where}: a template needs values: {{name: path}} for each {{name}} in it")
            out.values = {str(k): [parse_path(p, f"{where}.values.{k}") for p in _as_list(v, f"{where}.values.{k}")] for k, v in values.items()}
            names = set(re.findall(r"{(\w+)}", out.template))
            if names - set(out.values):
                raise ConfigError(f"{where}: template names {', '.join(sorted(names - set(out.values)))} without values")
        if not (out.paths or out.template or out.extension_suffix):
            raise ConfigError(f"{where}: give a path, a template or an extension_suffix")
        return out

    def describe(self) -> str:
        if self.template:
            return self.template
        if self.extension_suffix:
            return f"extension *{self.extension_suffix}"
        return " or ".join(".".join(p) for p in self.paths)

    def value(self, st):
        if self.template is not None:
            got = {}
            for name, paths in self.values.items():
                v = _first(st, paths)
                if v is None:
                    return None
                got[name] = _text(v)
            return self.template.format(**got)
        v = _first(st, self.paths) if self.paths else None
        if v is None and self.extension_suffix:
            v = _suffix(st, self.extension_suffix)
        if v is None:
            return None
        if self.pattern is not None:
            m = self.pattern.search(_text(v))
            if not m:
                return None
            v = m.group(1) if m.groups() else m.group(0)
        if self.last_segment:
            v = re.sub(r"^.*[/#:]", "", _text(v).rstrip("/"))
        return v


def _first(st, paths):
    for p in paths:
        v = get(st, p)
        if v is not None and v != "":
            return v
    return None


def _suffix(st, suffix: str):
    for where in (("context", "extensions"), ("result", "extensions"), ("object", "definition", "extensions")):
        ext = get(st, where)
        if isinstance(ext, dict):
            for k, v in ext.items():
                if isinstance(k, str) and k.endswith(suffix) and v is not None:
                    return v
    return None


def _text(v) -> str:
    import json

    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)


@dataclass
class Correct:
    rule: str = "success"
    threshold: float = 1.0

    @classmethod
    def parse(cls, spec, where: str) -> Correct:
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected {{rule: success}}, {{rule: scaled, threshold: 0.8}} or {{rule: raw_equals_max}}, got {spec!r}")
        _unknown(spec, CORRECT_KEYS, where)
        rule = spec.get("rule")
        if rule not in CORRECT_RULES:
            raise ConfigError(f"{where}.rule: {rule!r} is not a correctness rule; valid rules: {', '.join(sorted(CORRECT_RULES))}")
        threshold = spec.get("threshold", 1.0)
        if rule == "scaled" and not isinstance(threshold, (int, float)):
            raise ConfigError(f"{where}.threshold: expected a number, got {threshold!r}")
        return cls(rule, float(threshold))


@dataclass
class Rule:
    name: str
    kind: str
    verbs: frozenset = frozenset()
    verb_names: frozenset = frozenset()
    verb_contains: str | None = None
    object_types: frozenset = frozenset()
    object_id_pattern: re.Pattern | None = None
    categories: frozenset = frozenset()
    absent_categories: frozenset = frozenset()
    present: list = field(default_factory=list)
    absent: list = field(default_factory=list)
    hints: FieldSpec | None = None
    passed: bool | None = None
    correct: Correct | None = None
    reason: str = ""

    def matches(self, verb_id: str, verb_name: str, object_type, object_id, categories: set, st) -> bool:
        if self.verbs and verb_id not in self.verbs:
            return False
        if self.verb_names and verb_name not in self.verb_names:
            return False
        if self.verb_contains and self.verb_contains not in verb_id.lower():
            return False
        if self.object_types and object_type not in self.object_types:
            return False
        if self.object_id_pattern is not None and not (isinstance(object_id, str) and self.object_id_pattern.search(object_id)):
            return False
        if self.categories and not self.categories <= categories:
            return False
        if self.absent_categories and self.absent_categories & categories:
            return False
        if any(get(st, p) is None for p in self.present):
            return False
        if any(get(st, p) is not None for p in self.absent):
            return False
        return True


@dataclass
class Profile:
    name: str
    description: str
    rules: list[Rule]
    fields: dict[str, FieldSpec]
    kcs: dict[str, FieldSpec]
    kc_prefix: str | None
    correct: Correct
    detect_prefixes: tuple[str, ...] = ()
    detect_categories: frozenset = frozenset()
    instrument: FieldSpec | None = None
    phase: str = "post"
    source: str = ""

    def detects(self, st) -> bool:
        if not isinstance(st, dict):
            return False
        if self.detect_prefixes:
            for where in (("context", "extensions"), ("result", "extensions")):
                ext = get(st, where)
                if isinstance(ext, dict) and any(isinstance(k, str) and k.startswith(self.detect_prefixes) for k in ext):
                    return True
        if self.detect_categories and self.detect_categories & categories_of(st):
            return True
        return False

    def verbs_by_kind(self, kind: str) -> list[str]:
        out = []
        for r in self.rules:
            if r.kind == kind:
                out += sorted(r.verbs) + sorted(r.verb_names) + ([f"*{r.verb_contains}*"] if r.verb_contains else [])
        return list(dict.fromkeys(out))


def categories_of(st) -> set:
    ctx = st.get("context") if isinstance(st, dict) else None
    acts = ctx.get("contextActivities") if isinstance(ctx, dict) else None
    cats = acts.get("category") if isinstance(acts, dict) else None
    if isinstance(cats, dict):
        cats = [cats]
    if not isinstance(cats, list):
        return set()
    return {c.get("id") for c in cats if isinstance(c, dict) and isinstance(c.get("id"), str)}


def parse_profile(doc, source: str) -> Profile:
    where = source
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a statement profile must be a YAML mapping with keys {', '.join(sorted(TOP_KEYS))}")
    _unknown(doc, TOP_KEYS, where)
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' is required (a short profile name)")
    detect = doc.get("detect") or {}
    if not isinstance(detect, dict):
        raise ConfigError(f"{where}.detect: expected a mapping with keys {', '.join(sorted(DETECT_KEYS))}")
    _unknown(detect, DETECT_KEYS, f"{where}.detect")
    fields_doc = doc.get("fields") or {}
    if not isinstance(fields_doc, dict):
        raise ConfigError(f"{where}.fields: expected a mapping with keys {', '.join(sorted(FIELD_KEYS))}")
    _unknown(fields_doc, FIELD_KEYS, f"{where}.fields")
    fields = {k: FieldSpec.parse(v, f"{where}.fields.{k}") for k, v in fields_doc.items() if k not in ("kcs", "kc_prefix")}
    kcs_doc = fields_doc.get("kcs") or {}
    if not isinstance(kcs_doc, dict):
        raise ConfigError(f"{where}.fields.kcs: expected a mapping of KC model name to path, got {kcs_doc!r}")
    kcs = {str(m): FieldSpec.parse(v, f"{where}.fields.kcs.{m}") for m, v in kcs_doc.items()}
    rules_doc = doc.get("rules")
    if not isinstance(rules_doc, list) or not rules_doc:
        raise ConfigError(f"{where}.rules: a list of rules is required (each with name and kind)")
    rules = []
    for i, r in enumerate(rules_doc, start=1):
        rw = f"{where}.rules[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(f"{rw}: expected a mapping with keys {', '.join(sorted(RULE_KEYS))}")
        _unknown(r, RULE_KEYS, rw)
        kind = r.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{rw}.kind: {kind!r} is not a rule kind; valid kinds: {', '.join(KINDS)}")
        pattern = None
        if r.get("object_id_pattern") is not None:
            try:
                pattern = re.compile(str(r["object_id_pattern"]))
            except re.error as exc:
                raise ConfigError(f"{rw}.object_id_pattern: not a regular expression ({exc})") from None
        rules.append(Rule(
            name=str(r.get("name") or f"rule{i}"), kind=kind,
            verbs=frozenset(_as_list(r.get("verbs"), rw + ".verbs")),
            verb_names=frozenset(v.lower() for v in _as_list(r.get("verb_names"), rw + ".verb_names")),
            verb_contains=(str(r["verb_contains"]).lower() if r.get("verb_contains") else None),
            object_types=frozenset(_as_list(r.get("object_types"), rw + ".object_types")),
            object_id_pattern=pattern,
            categories=frozenset(_as_list(r.get("categories"), rw + ".categories")),
            absent_categories=frozenset(_as_list(r.get("absent_categories"), rw + ".absent_categories")),
            present=[parse_path(p, rw + ".present") for p in _as_list(r.get("present"), rw + ".present")],
            absent=[parse_path(p, rw + ".absent") for p in _as_list(r.get("absent"), rw + ".absent")],
            hints=FieldSpec.parse(r["hints"], rw + ".hints") if r.get("hints") is not None else None,
            passed=r.get("passed"),
            correct=Correct.parse(r["correct"], rw + ".correct") if r.get("correct") is not None else None,
            reason=str(r.get("reason") or ""),
        ))
    kinds = {r.kind for r in rules}
    if kinds & {"answer", "hint", "reveal"} and "item" not in fields:
        fields["item"] = FieldSpec(paths=[("object", "id")])
    assessment = doc.get("assessment") or {}
    if not isinstance(assessment, dict):
        raise ConfigError(f"{where}.assessment: expected a mapping with keys {', '.join(sorted(ASSESSMENT_KEYS))}")
    _unknown(assessment, ASSESSMENT_KEYS, f"{where}.assessment")
    phase = assessment.get("phase", "post")
    if phase not in ("pre", "mid", "post"):
        raise ConfigError(f"{where}.assessment.phase: {phase!r} is not a phase; valid phases: pre, mid, post")
    instrument = FieldSpec.parse(assessment.get("instrument", "object.id"), f"{where}.assessment.instrument") if "assessment" in kinds else None
    return Profile(
        name=name, description=str(doc.get("description") or ""), rules=rules, fields=fields, kcs=kcs,
        kc_prefix=fields_doc.get("kc_prefix"), correct=Correct.parse(doc.get("correct", {"rule": "success"}), f"{where}.correct"),
        detect_prefixes=tuple(_as_list(detect.get("extension_prefixes"), f"{where}.detect.extension_prefixes")),
        detect_categories=frozenset(_as_list(detect.get("categories"), f"{where}.detect.categories")),
        instrument=instrument, phase=phase, source=source,
    )


_CACHE: dict[str, Profile] = {}


def load_profile(spec) -> Profile:
    """A built-in profile by name, a profile YAML file by path, or an already parsed mapping."""
    if isinstance(spec, Profile):
        return spec
    if isinstance(spec, dict):
        return parse_profile(spec, "profile")
    text = str(spec)
    if text in BUILTIN:
        if text not in _CACHE:
            path = PROFILE_DIR / f"{text}.yaml"
            _CACHE[text] = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")), f"built-in profile {text}")
        return _CACHE[text]
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"unknown xAPI profile {text!r}: not a built-in profile ({', '.join(BUILTIN)}) and no such file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: not a readable YAML statement profile ({str(exc).splitlines()[0]})") from None
    return parse_profile(doc, path.name)


def sniff_profile(statements, limit: int = 2000) -> tuple[Profile, str]:
    """(profile, how) for a list of statements: the one built-in profile whose detect
    conditions the statements meet, else ``adl``. Several: a ConfigError asking for --profile."""
    found = []
    candidates = [load_profile(n) for n in BUILTIN if n != "adl"]
    for p in candidates:
        if any(p.detects(st) for st in statements[:limit]):
            found.append(p)
    if len(found) > 1:
        raise ConfigError(
            "the statements fit more than one xAPI profile (" + ", ".join(p.name for p in found)
            + "); name one with --profile (built-in profiles: " + ", ".join(BUILTIN) + ")"
        )
    if found:
        return found[0], "sniffed"
    return load_profile("adl"), "default"
