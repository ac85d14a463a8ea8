"""Fuzzing the inputs: malformed model files, study files, data frames and queries.

Hypothesis generates broken inputs of each kind (wrong types, unknown names, cycles, duplicate
names, empty frames, NaN and infinities, huge values, unicode names, YAML tricks such as alias
bombs, recursive aliases and ``!!python/...`` tags). For every one:

* the only exceptions that escape are :class:`causal_wm.CausalWMError` subclasses, whose message
  names the culprit (the name, key, column or file the test broke);
* nothing hangs: every case runs under an alarm and its time is checked;
* nothing is executed from a file: the tags that would run a command would create a file, and
  the file never appears.

Sampling is replaced by a sentinel: an input that passes every check reaches it (counted as
"accepted"). Cases per category are counted in ``COUNTS`` and printed (``-rA``).
"""

from __future__ import annotations

import contextlib
import signal
import string
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import causal_wm as cw
import causal_wm.backends.numpyro as numpyro_backend
from causal_wm import queries
from causal_wm.study import Study
from causal_wm.testing import posterior_from_params

COUNTS: Counter = Counter()
CASE_SECONDS = 60.0  # generous on a loaded 2-core machine; a hang is unbounded
SETTINGS = dict(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


class Reached(Exception):
    """Raised in place of sampling: the input passed every check."""


class Hang(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float = CASE_SECONDS):
    def alarm(*_):
        raise Hang(f"case took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t0 < seconds


@contextlib.contextmanager
def no_sampling():
    real = numpyro_backend.sample

    def stop(*a, **k):
        raise Reached

    numpyro_backend.sample = stop
    try:
        yield
    finally:
        numpyro_backend.sample = real


def outcome(category: str, fn, culprits) -> str:
    """Run ``fn``; it may succeed, reach sampling, or raise a CausalWMError naming a culprit."""
    culprits = [str(c) for c in culprits if c is not None and str(c) != ""]
    try:
        with deadline():
            fn()
    except Reached:
        kind = "accepted"
    except cw.CausalWMError as exc:
        msg = str(exc)
        assert any(c in msg for c in culprits), f"message names none of {culprits!r}: {msg}"
        kind = type(exc).__name__
    else:
        kind = "accepted"
    COUNTS[category] += 1
    COUNTS[f"{category}:{kind}"] += 1
    return kind


def _report(prefix: str) -> str:
    return f"{prefix}: " + ", ".join(f"{k}={v}" for k, v in sorted(COUNTS.items()) if k.startswith(prefix))


# ============================================================================ model files
BASE_MODEL = {
    "name": "fuzz",
    "nodes": {
        "x": {"family": "normal"},
        "t": {"family": "bernoulli", "formula": "x"},
        "c": {"family": "poisson", "formula": "x"},
        "g": {"family": "categorical", "levels": ["a", "b"]},
        "y": {"family": "normal", "formula": "t + x + c + g"},
    },
}
NODE_NAMES = list(BASE_MODEL["nodes"])
junk = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                               max_size=3))
names = st.text(alphabet=string.ascii_letters + string.digits + "_-. éß漢\t", min_size=1, max_size=12)
formula_text = st.text(alphabet=string.ascii_letters + " +:*()|~-0123456789/.,'\"[]{}$^!", max_size=40)
TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{marker}']]",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/object:pathlib.Path {{}}",
    "!!python/module:os",
    "!foo bar",
    "!!binary aGVsbG8=",
    "!!set {{a, b}}",
    "!!timestamp 2001-12-14",
]


def _dump(d) -> str:
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


@st.composite
def model_cases(draw):
    """(YAML text or bytes, culprits) of a model file broken in one way."""
    d = yaml.safe_load(_dump(BASE_MODEL))
    node = draw(st.sampled_from(NODE_NAMES))
    kind = draw(st.sampled_from([
        "family_unknown", "family_type", "formula_text", "formula_type", "unknown_parent", "cycle", "self_loop",
        "duplicate_node", "duplicate_top", "node_name", "node_key", "node_value", "priors", "levels", "latent",
        "top_key", "nodes_type", "prior_number", "bomb", "recursive", "tag", "deep", "encoding", "documents",
        "bool_key", "name_path", "empty", "huge_file", "control_chars"]))
    culprits: list = [node]
    text = None
    if kind == "family_unknown":
        fam = draw(st.text(max_size=15))
        assume(fam not in cw.spec.FAMILIES)
        d["nodes"][node]["family"] = fam
    elif kind == "family_type":
        d["nodes"][node]["family"] = draw(junk.filter(lambda v: not isinstance(v, str)))
    elif kind == "formula_text":
        d["nodes"][node]["formula"] = draw(formula_text)
        culprits += ["cycle", "formula"]
    elif kind == "formula_type":
        d["nodes"][node]["formula"] = draw(junk.filter(lambda v: not isinstance(v, str) and v is not None))
    elif kind == "unknown_parent":
        parent = draw(names)
        assume(parent not in NODE_NAMES)
        d["nodes"][node]["formula"] = f"x + {parent}" if node != "x" else parent
        culprits = [parent, node]
    elif kind == "cycle":
        d["nodes"]["x"]["formula"] = draw(st.sampled_from(["y", "t", "c + t"]))
        culprits = ["cycle"]
    elif kind == "self_loop":
        d["nodes"][node]["formula"] = node
    elif kind == "duplicate_node":
        text = _dump(d).replace("nodes:\n", f"nodes:\n  {node}: {{family: normal}}\n", 1)
    elif kind == "duplicate_top":
        text = _dump(d) + "name: again\n"
        culprits = ["name"]
    elif kind == "node_name":
        new = draw(names)
        assume(new not in NODE_NAMES)
        d["nodes"][new] = d["nodes"].pop(node)
        culprits = [repr(new), new]
        if node in ("x", "t", "c", "g"):  # other formulas now name a parent that is gone
            culprits.append(repr(node))
    elif kind == "node_key":
        key = draw(names)
        assume(key not in cw.spec.NODE_KEYS)
        d["nodes"][node][key] = draw(junk)
        culprits = [repr(key), node]
    elif kind == "node_value":
        d["nodes"][node] = draw(junk.filter(lambda v: not isinstance(v, dict) and v is not None))
    elif kind == "priors":
        d["nodes"][node]["priors"] = draw(st.one_of(junk, st.dictionaries(
            st.sampled_from(["b", "sigma", "intercept", "sd", "nu", "phi", "b[x]", "b[zz]", "zz"]),
            st.one_of(junk, st.fixed_dictionaries({"dist": st.sampled_from(["normal", "halfnormal", "gamma", "x"])},
                                                  optional={"loc": junk, "scale": junk})), max_size=3)))
    elif kind == "levels":
        d["nodes"][node]["levels"] = draw(junk)
    elif kind == "latent":
        d["nodes"][node]["latent"] = draw(junk.filter(lambda v: not isinstance(v, bool)))
    elif kind == "top_key":
        key = draw(names)
        assume(key not in cw.spec.MODEL_KEYS)
        d[key] = draw(junk)
        culprits = [repr(key)]
    elif kind == "nodes_type":
        d["nodes"] = draw(junk.filter(lambda v: not isinstance(v, dict) or not v))
        culprits = ["nodes"]
    elif kind == "prior_number":
        v = draw(st.sampled_from([1e308, -1e308, float("inf"), float("nan"), 0.0, -1.0, 1e-320, 10**400]))
        text = _dump(d).replace("  x:\n    family: normal\n",
                                f"  x:\n    family: normal\n    priors: {{sigma: {{dist: halfnormal, scale: {v}}}}}\n")
        culprits = ["x"]
    elif kind == "bomb":
        depth, width = draw(st.integers(4, 9)), draw(st.integers(5, 12))
        lines = ["assumptions:", f"  - &a0 [{', '.join(['lol'] * width)}]"]
        lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
        where = draw(st.sampled_from(["description", "node", "name"]))
        body = _dump(d)
        if where == "node":
            body = body.replace("  y:\n", f"  z: *a{depth - 1}\n  y:\n", 1)
        elif where == "description":
            body = body.replace("  y:\n", f"  y:\n    description: *a{depth - 1}\n", 1)
        else:
            body = body.replace("name: fuzz\n", f"name: *a{depth - 1}\n", 1)
        text = "\n".join(lines) + "\n" + body
        culprits = ["alias", "assumptions", "name", "z", "description", "y"]
    elif kind == "recursive":
        text = _dump(d).replace("nodes:\n", "nodes: &r\n", 1) + "description: *r\n"
        culprits = ["alias", "description"]
    elif kind == "tag":
        tag = draw(st.sampled_from(TAGS))
        field = draw(st.sampled_from(["name", "description", "family"]))
        value = tag.format(marker="{marker}")
        body = _dump(d)
        if field == "family":
            body = body.replace("family: normal", f"family: {value}", 1)
        else:
            body = f"{field}: {value}\n" + body.replace("name: fuzz\n", "" if field == "name" else "name: fuzz\n")
        text = body
        culprits = ["tag", "!", "name", "family", "description", "x", "fuzz"]
    elif kind == "deep":
        n = draw(st.integers(200, 3000))
        text = _dump(d) + "description: " + "[" * n + "]" * n + "\n"
        culprits = ["nested", "description"]
    elif kind == "encoding":
        raw = _dump(d).encode("utf-8")
        junk_bytes = draw(st.binary(min_size=1, max_size=8).filter(lambda b: _not_utf8(b)))
        text = raw.replace(b"name: fuzz", b"name: fuzz" + junk_bytes, 1)
        culprits = ["UTF-8", "YAML", "name"]
    elif kind == "documents":
        text = _dump(d) + "---\n" + _dump(d)
        culprits = ["YAML", "document"]
    elif kind == "bool_key":
        word = draw(st.sampled_from(["yes", "no", "on", "off", "true", "null", "~", "12", "0x1f", "1e3"]))
        text = _dump(d).replace("  t:\n", f"  {word}:\n", 1).replace("t + x", f"{word} + x")
        culprits = ["not text", word, "t", "formula"]
    elif kind == "name_path":
        d["name"] = draw(st.sampled_from(["../escape", "..", ".", "a/b", "/etc", "x\\y", "", "a" * 101, "\x00"]))
        culprits = ["model name", "nodes", "name"]
    elif kind == "empty":
        text = draw(st.sampled_from(["", "~\n", "[]\n", "42\n", "'just text'\n", "nodes:\n"]))
        culprits = ["mapping", "nodes"]
    elif kind == "huge_file":
        text = _dump(d) + "description: '" + "x" * 1_100_000 + "'\n"
        culprits = ["larger than"]
    elif kind == "control_chars":
        bad = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\ufeff", "\u202e", "\ud800"]))
        text = _dump(d).replace("name: fuzz", f"name: fuzz{bad}", 1)
        culprits = ["YAML", "UTF-8", "name", "fuzz", "model name", "special characters"]
    if text is None:
        text = _dump(d)
    return kind, text, culprits


def _not_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _write(path: Path, text) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


def test_malformed_model_files(tmp_path):
    marker = tmp_path / "executed"

    @settings(max_examples=400, **SETTINGS)
    @given(model_cases())
    def prop(case):
        kind, text, culprits = case
        path = tmp_path / "model.yaml"
        if isinstance(text, str):
            text = text.replace("{marker}", str(marker))
        _write(path, text)
        COUNTS[f"model[{kind}]"] += 1
        outcome("model", lambda: cw.load_model(path), [*culprits, str(path)])
        assert not marker.exists(), "a tag in the file ran a command"

    prop()
    print(_report("model"))
    assert COUNTS["model"] >= 400
    assert not marker.exists()


def test_yaml_bomb_is_refused_quickly(tmp_path):
    lines = ["name: m", "assumptions:", "  - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 values
    lines += ["nodes:", "  x: {description: *a9}"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    with deadline(10.0), pytest.raises(cw.ModelSpecError, match="alias"):
        cw.load_model(tmp_path / "bomb.yaml")
    assert time.monotonic() - t0 < 2.0


def test_python_tag_creates_no_file(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "m.yaml").write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nnodes: {{x: {{}}}}\n")
    with pytest.raises(cw.ModelSpecError, match=r"python/object/apply:os\.system"):
        cw.load_model(tmp_path / "m.yaml")
    (tmp_path / "s.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\nqueries: []\n")
    with pytest.raises(cw.StudyError, match=r"python/object/apply:os\.system"):
        Study.load(tmp_path / "s.yaml")
    assert not marker.exists()


# ============================================================================ study files
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz_study")
    (d / "model.yaml").write_text(_dump(BASE_MODEL))
    rng = np.random.default_rng(0)
    n = 40
    x = rng.normal(size=n)
    pd.DataFrame({"x": x, "t": rng.integers(0, 2, n), "c": rng.poisson(2.0, n), "g": rng.choice(["a", "b"], n),
                  "y": rng.normal(size=n)}).to_csv(d / "data.csv", index=False)
    return d


BASE_STUDY = {
    "name": "fuzzstudy", "model": "model.yaml", "data": {"path": "data.csv"}, "seed": 1,
    "fit": {"chains": 1, "draws": 10, "warmup": 10},
    "queries": [
        {"name": "ate", "kind": "effect", "outcome": "y", "do": {"t": 1}, "vs": {"t": 0}},
        {"name": "sim", "kind": "simulate", "do": {"x": {"shift": 1.0}}, "n": 50},
        {"name": "cf", "kind": "counterfactual", "do": {"t": 0}, "units": {"t": 1}},
        {"name": "med", "kind": "mediation", "treatment": "x", "mediator": "t", "outcome": "y"},
    ],
    "expect": [{"query": "ate", "estimate_within": [-10, 10]}],
}
QUERY_FIELDS = ["outcome", "do", "vs", "given", "level", "n", "units", "draws", "summary_only", "treatment", "mediator",
                "treat_value", "control_value", "kind", "name"]
values = st.one_of(junk, st.sampled_from(NODE_NAMES), st.fixed_dictionaries({"shift": junk}),
                   st.fixed_dictionaries({"scale": junk}),
                   st.fixed_dictionaries({"distribution": st.sampled_from(["normal", "bernoulli", "cauchy", 3])},
                                         optional={"loc": junk, "scale": junk, "p": junk}),
                   st.dictionaries(st.one_of(st.sampled_from(NODE_NAMES), names), junk, max_size=3))


@st.composite
def study_cases(draw):
    d = yaml.safe_load(_dump(BASE_STUDY))
    kind = draw(st.sampled_from(["top_key", "top_value", "fit_key", "fit_value", "seed", "query_field", "query_key",
                                 "query_drop", "query_dup", "query_name", "queries_type", "expect", "model",
                                 "data", "name", "checks"]))
    q = draw(st.integers(0, len(d["queries"]) - 1))
    qname = d["queries"][q]["name"]
    culprits: list = []
    if kind == "top_key":
        key = draw(names)
        assume(key not in BASE_STUDY and key not in ("checks", "description"))  # checks: its own kind
        d[key] = draw(junk)
        culprits = [repr(key)]
    elif kind == "top_value":
        key = draw(st.sampled_from(["fit", "queries", "expect", "data", "model", "seed", "description"]))
        d[key] = draw(junk)
        culprits = [key, f"'{key}'"]
    elif kind == "fit_key":
        key = draw(names)
        d["fit"][key] = draw(junk)
        culprits = [repr(key), "fit"]
    elif kind == "fit_value":
        key = draw(st.sampled_from(["backend", "method", "chains", "draws", "warmup", "target_accept", "guide",
                                    "steps", "sampler"]))
        d["fit"][key] = draw(junk)
        culprits = [key, "fit"]
    elif kind == "seed":
        d["seed"] = draw(junk)
        culprits = ["seed"]
    elif kind == "query_field":
        field = draw(st.sampled_from(QUERY_FIELDS))
        d["queries"][q][field] = draw(values)
        culprits = [qname, field, "query", "kind"]
    elif kind == "query_key":
        key = draw(names)
        assume(key not in QUERY_FIELDS and key != "question")
        d["queries"][q][key] = draw(junk)
        culprits = [repr(key), qname]
    elif kind == "query_drop":
        field = draw(st.sampled_from(list(d["queries"][q])))
        d["queries"][q].pop(field)
        culprits = [qname, field, "name", "query"]
    elif kind == "query_dup":
        d["queries"].append(dict(d["queries"][q]))
        culprits = [qname]
    elif kind == "query_name":
        d["queries"][q]["name"] = draw(junk)
        culprits = ["name", "query"]
    elif kind == "queries_type":
        d["queries"] = draw(st.one_of(junk, st.lists(junk, max_size=3)))
        culprits = ["queries", "query", "name"]
    elif kind == "expect":
        d["expect"] = draw(st.one_of(junk, st.lists(st.dictionaries(
            st.sampled_from(["query", "estimate_within", "interval_covers", "prob_positive_above", "zz"]),
            st.one_of(junk, st.sampled_from(["ate", "sim", "cf", "med"])), max_size=3), max_size=2)))
        culprits = ["expect"]
    elif kind == "model":
        d["model"] = draw(st.one_of(junk, names, st.sampled_from(["../model.yaml", "nope.yaml", "job_trainin"])))
        culprits = ["model", str(d["model"])]
    elif kind == "data":
        d["data"] = draw(st.one_of(junk, st.fixed_dictionaries({"path": st.one_of(junk, names)}),
                                   st.fixed_dictionaries({"package": junk, "table": junk})))
        culprits = ["data"]
    elif kind == "name":
        d["name"] = draw(st.sampled_from(["../escape", "..", "a/b", "", "ok\x00", "x" * 101]))
        culprits = ["study name", "name"]
    elif kind == "checks":
        entry = st.fixed_dictionaries(
            {"kind": st.one_of(st.sampled_from(["triangulate", "refute", "sensitivity", "falsify"]), junk,
                               st.lists(st.integers(), min_size=1, max_size=2))},
            optional={"outcome": st.one_of(st.sampled_from(NODE_NAMES), junk),
                      "treatment": st.one_of(st.sampled_from(NODE_NAMES), junk),
                      "strengths": junk, "alpha": junk, "num_simulations": junk, "draws": junk, "zz": junk})
        d["checks"] = draw(st.one_of(junk, st.lists(st.one_of(entry, junk), min_size=1, max_size=2)))
        culprits = ["checks"]
    return kind, d, culprits


def test_malformed_study_files(study_dir, tmp_path):
    @settings(max_examples=300, **SETTINGS)
    @given(study_cases())
    def prop(case):
        kind, d, culprits = case
        path = study_dir / "study.yaml"
        path.write_text(_dump(d), encoding="utf-8")

        def load_and_run():
            with no_sampling():
                Study.load(path).run(tmp_path / "out")

        COUNTS[f"study[{kind}]"] += 1
        outcome("study", load_and_run, [*culprits, str(path)])
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written

    prop()
    print(_report("study"))
    assert COUNTS["study"] >= 300


# ============================================================================ data frames
TOY = cw.SCM.from_dict(BASE_MODEL)
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**20, 10**20), st.booleans(), st.none(),
    st.text(max_size=5), st.sampled_from([1e308, -1e308, 1e-320, 1e200, 2**63, "a", "b", pd.NaT, pd.NA]))


@st.composite
def frames(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = draw(st.integers(0, 30))
    good = {"x": rng.normal(size=n), "t": rng.integers(0, 2, n), "c": rng.poisson(2.0, n),
            "g": rng.choice(["a", "b"], n), "y": rng.normal(size=n)}
    df = pd.DataFrame(good)
    kind = draw(st.sampled_from(["cells", "column_type", "drop", "extra", "duplicate", "rename", "empty",
                                 "not_frame", "index", "constant"]))
    col = draw(st.sampled_from(NODE_NAMES))
    culprits = [col, repr(col)]
    if kind == "cells" and n:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, n - 1))
            df[col] = df[col].astype(object)
            df.iloc[i, df.columns.get_loc(col)] = draw(cells)
    elif kind == "column_type":
        maker = draw(st.sampled_from(["str", "bool", "datetime", "complex", "category", "object_mix", "timedelta"]))
        if maker == "str":
            df[col] = df[col].astype(str)
        elif maker == "bool":
            df[col] = df[col].astype(bool) if col != "g" else True
        elif maker == "datetime":
            df[col] = pd.Timestamp("2020-01-01")
        elif maker == "complex":
            df[col] = np.ones(n) * (1 + 2j)
        elif maker == "category":
            df[col] = df[col].astype("category")
        elif maker == "timedelta":
            df[col] = pd.Timedelta("1D")
        else:
            df[col] = [draw(cells) for _ in range(n)]
    elif kind == "drop":
        df = df.drop(columns=[col])
    elif kind == "extra":
        df[draw(names)] = draw(cells)
    elif kind == "duplicate":
        df = pd.concat([df, df[[col]]], axis=1)
    elif kind == "rename":
        df = df.rename(columns={col: draw(st.sampled_from([col.upper(), col + " ", "é" + col, 0, None]))})
    elif kind == "empty":
        df = df.iloc[0:0]
        culprits += ["no rows", "rows"]
    elif kind == "not_frame":
        df = draw(st.sampled_from(["dict", "list", "array", "none", "series"]))
        df = {"dict": good, "list": [1, 2], "array": np.zeros((3, 5)), "none": None,
              "series": pd.Series([1.0])}[df]
        culprits = ["DataFrame"]
    elif kind == "index":
        df.index = draw(st.sampled_from([[0] * n, [None] * n, [f"é{i}" for i in range(n)]]))
    elif kind == "constant":
        df[col] = {"x": 3.0, "t": 1, "c": 0, "g": "a", "y": 2.0}[col]
    if isinstance(df, pd.DataFrame) and len(df) == 0:
        culprits += ["no rows"]
    return kind, df, culprits


def test_malformed_data_frames():
    @settings(max_examples=300, **SETTINGS)
    @given(frames())
    def prop(case):
        kind, df, culprits = case

        def fit():
            import warnings

            with no_sampling(), warnings.catch_warnings():
                warnings.simplefilter("ignore", cw.DataWarning)  # findings about odd data are not failures here
                TOY.fit(df, chains=1, draws=5, warmup=5)

        COUNTS[f"frame[{kind}]"] += 1
        outcome("frame", fit, [*culprits, *NODE_NAMES])

    prop()
    print(_report("frame"))
    assert COUNTS["frame"] >= 300


# ============================================================================ queries
@pytest.fixture(scope="module")
def toy_post():
    rng = np.random.default_rng(1)
    n = 30
    df = pd.DataFrame({"x": rng.normal(size=n), "t": rng.integers(0, 2, n), "c": rng.poisson(2.0, n),
                       "g": rng.choice(["a", "b"], n), "y": rng.normal(size=n)})
    from causal_wm.testing import parameter_shapes

    shapes = parameter_shapes(TOY, df)
    params = {k: rng.normal(0.0, 0.3, (1, 20) + s) + (1.0 if k.endswith(("sigma", "phi", "nu")) else 0.0)
              for k, s in shapes.items()}
    post = posterior_from_params(TOY, df, params)
    # compile every kernel once before the timed cases (an alarm must not interrupt a compilation)
    queries.effect(post, "y", {"t": 1}, {"t": 0}, engine="generic")
    queries.counterfactual(post, df, {"t": 0}, engine="generic")
    queries.counterfactual(post, df, {"t": 0}, summary_only=True, engine="generic")
    queries.mediation(post, "x", "t", "y", engine="generic")
    post.simulate({"x": cw.normal(0, 1)}, n=10)
    return df, post


query_values = st.one_of(
    junk, st.sampled_from(["a", "b", 0, 1, 2, 0.5, -3, 1e300, -1e300, float("nan"), float("inf"), 10**30]),
    st.builds(cw.shift, st.floats(allow_nan=False, allow_infinity=False)),  # (non-finite ones: refused on
    st.builds(cw.scale, st.floats(allow_nan=False, allow_infinity=False)),  # construction, test_query_inputs)
    st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-5, 5), st.sampled_from(["a", "b"])), max_size=35),
    st.sampled_from([lambda v: v * 0, lambda v: "z", lambda v: v[:1], lambda v: None, lambda v: np.ones(3)]),
    st.sampled_from([cw.normal(0, 1), cw.bernoulli(0.3), cw.uniform(0, 1), cw.uniform(5, 1)]),
)
keys = st.one_of(st.sampled_from(NODE_NAMES), names, st.integers(), st.none())


BASE_QUERIES = {
    "effect": {"outcome": "y", "do": {"t": 1}, "vs": {"t": 0}, "given": None, "level": None},
    "counterfactual": {"do": {"t": 0}, "units": "all", "draws": None, "summary_only": False, "prob": 0.9},
    "simulate": {"do": {"x": cw.shift(1.0)}, "n": 100, "seed": None},
    "mediation": {"treatment": "x", "mediator": "t", "outcome": "y", "treat_value": 1.0, "control_value": 0.0},
}
FIELD_VALUES = {
    "outcome": keys, "treatment": keys, "mediator": st.one_of(keys, st.lists(keys, max_size=2)),
    "level": st.one_of(st.none(), st.sampled_from(["a", "b", "z"]), junk),
    "given": st.one_of(st.none(), st.dictionaries(keys, query_values, max_size=2), junk,
                       st.sampled_from([np.ones(30, bool), np.zeros(30, bool), np.ones(3, bool), np.ones(30)])),
    "draws": st.one_of(st.none(), st.integers(-5, 40), junk), "summary_only": st.one_of(st.booleans(), junk),
    "prob": st.one_of(st.sampled_from([0.5, 0.9, 0.0, 1.0, -1.0, 2.0]), junk),
    "units": st.sampled_from(["all", "first", "empty", "bad", "not_frame", "nan", "missing_col", "new_rows"]),
    "n": st.one_of(st.integers(-3, 200), st.sampled_from([10**12, 2**62]), junk),
    "seed": st.one_of(st.none(), st.integers(-3, 2**64), junk),
    "treat_value": query_values, "control_value": query_values,
}


@st.composite
def query_cases(draw):
    """A valid query of each kind with one or two fields broken (or a few interventions changed)."""
    which = draw(st.sampled_from(sorted(BASE_QUERIES)))
    kw = dict(BASE_QUERIES[which])
    for _ in range(draw(st.integers(1, 2))):
        field = draw(st.sampled_from(sorted(kw)))
        if field in ("do", "vs"):
            choice = draw(st.integers(0, 3))
            if choice == 0:
                kw[field] = draw(junk)
            else:  # one to three interventions, mostly on real nodes
                kw[field] = draw(st.dictionaries(st.one_of(st.sampled_from(NODE_NAMES), keys), query_values,
                                                 min_size=0 if field == "vs" else 1, max_size=3))
        else:
            kw[field] = draw(FIELD_VALUES[field])
    return which, kw


def test_malformed_queries(toy_post):
    df, post = toy_post

    @settings(max_examples=300, **SETTINGS)
    @given(query_cases())
    def prop(case):
        which, kw = case
        kw = dict(kw)
        if which == "counterfactual":
            units = kw.pop("units")
            kw["units"] = {"all": df, "first": df.iloc[:1], "empty": df.iloc[:0],
                           "bad": df.assign(x="oops"), "not_frame": [1, 2], "nan": df.assign(y=np.nan),
                           "missing_col": df.drop(columns=["c"]), "new_rows": df.assign(c=df["c"] + 100)}[units]
            call = lambda: queries.counterfactual(post, engine="generic", **kw)  # noqa: E731
        elif which == "effect":
            call = lambda: queries.effect(post, engine="generic", **kw)  # noqa: E731
        elif which == "simulate":
            call = lambda: post.simulate(**kw)  # noqa: E731
        else:
            call = lambda: queries.mediation(post, engine="generic", **kw)  # noqa: E731
        culprits = [*NODE_NAMES, "do", "vs", "given", "n ", "n=", "seed", "draws", "prob", "units", "outcome",
                    "level", "mediation", "mediator", "treatment", "callable", "distribution"]
        culprits += [str(k) for k in kw["do"]] if isinstance(kw.get("do"), dict) else []
        outcome(f"query:{which}", call, culprits)
        COUNTS["query"] += 1

    prop()
    print(_report("query"))
    assert COUNTS["query"] >= 300


@pytest.mark.parametrize("entry", ["{kind: [1]}", "{kind: {a: 1}}", "[falsify]", "{kind: falsify, alpha: [1]}"])
def test_study_checks_entries_of_the_wrong_shape(study_dir, entry):
    path = study_dir / "checks.yaml"
    path.write_text(_dump({k: v for k, v in BASE_STUDY.items() if k != "expect"}) + f"checks:\n  - {entry}\n")
    with pytest.raises(cw.StudyError, match="checks entry 1"):
        Study.load(path)
