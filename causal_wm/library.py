"""Loading model and study files: YAML, safe-loaded, with line numbers for errors.

The model library lives in the repository's ``models/`` folder; an installed wheel carries a
copy under ``causal_wm/_library/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from causal_wm.errors import ModelSpecError, StudyError, suggest

MAX_FILE_BYTES = 1_000_000
# Values in a file once its aliases are expanded: model and study files hold hundreds; an "alias
# bomb" (anchors repeated inside each other, the "billion laughs") holds billions and would hang
# whatever walks it (an error message's repr, json.dumps).
MAX_YAML_VALUES = 100_000
_MERGE = "tag:yaml.org,2002:merge"
KINDS = {"models": "model", "studies": "study"}


def library_dir(kind: str) -> Path:
    """The folder of shipped ``models`` or ``studies``."""
    pkg = Path(__file__).resolve().parent
    for cand in (pkg / "_library" / kind, pkg.parent / kind):
        if cand.is_dir():
            return cand
    return pkg.parent / kind


def read_yaml(path: Path, error=ModelSpecError) -> tuple[object, dict[str, int]]:
    """Safe-load a YAML file; return the data and the line of every key of the top mappings.

    Keys of ``nodes:`` and ``queries:`` get their own lines so that errors can point at them.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{str(path)!r} is a folder; give the path of a YAML file.")
    if not path.is_file():
        raise error(f"file {str(path)!r} does not exist; check the path.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise error(f"file {str(path)!r} is larger than {MAX_FILE_BYTES} bytes; is it the right file?")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8.") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_tree(root, path, error)
        data = yaml.load(text, Loader=yaml.SafeLoader)  # SafeLoader: no tags that build objects
    except yaml.constructor.ConstructorError as exc:
        raise error(
            f"{path}: YAML tag {exc.problem.split('tag ', 1)[-1] if exc.problem else ''} is not allowed: "
            "model and study files are data, so tags that build Python objects (like !!python/...) "
            f"are refused. Remove the tag.\n{exc.problem_mark or ''}"
        ) from None
    except yaml.YAMLError as exc:
        hint = " Indent with spaces: YAML does not allow tabs." if "'\\t'" in str(exc) or "\t" in str(exc) else ""
        raise error(f"{path}: not valid YAML: {exc}{hint}") from None
    except RecursionError:
        raise error(f"{path}: the YAML is nested too deeply to read; is it the right file?") from None
    lines: dict[str, int] = {}
    if isinstance(root, yaml.MappingNode):
        for k, v in root.value:
            lines[str(k.value)] = k.start_mark.line + 1
            if isinstance(v, yaml.MappingNode):
                for k2, _ in v.value:
                    lines.setdefault(str(k2.value), k2.start_mark.line + 1)
            elif isinstance(v, yaml.SequenceNode):
                for item in v.value:
                    if isinstance(item, yaml.MappingNode):
                        for k2, v2 in item.value:
                            if k2.value == "name":
                                lines.setdefault(str(v2.value), item.start_mark.line + 1)
    return data, lines


def _check_tree(root, path, error) -> None:
    """Refuse what a safe load accepts but a data file has no business holding: a key given twice
    in one mapping (YAML would keep the last one silently), aliases that expand to more than
    ``MAX_YAML_VALUES`` values, and an alias inside its own anchor (a recursive structure)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node) -> int:
        if id(node) in sizes:  # an alias: the same node again, counted at its expanded size
            return sizes[id(node)]
        if id(node) in open_:
            raise error(f"{path}, line {node.start_mark.line + 1}: a YAML alias refers to its own anchor "
                        "(a recursive structure); write the value out instead.")
        open_.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE:
                    if (k.tag, k.value) in seen:
                        raise error(f"{path}, line {k.start_mark.line + 1}: key {k.value!r} is given twice in one "
                                    f"mapping (first on line {seen[(k.tag, k.value)]}); YAML would silently keep "
                                    "the last one. Remove or rename one of them.")
                    seen[(k.tag, k.value)] = k.start_mark.line + 1
                total += size(k) + size(v)
        elif isinstance(node, yaml.SequenceNode):
            for v in node.value:
                total += size(v)
        if total > MAX_YAML_VALUES:
            raise error(f"{path}, line {node.start_mark.line + 1}: the YAML expands to more than {MAX_YAML_VALUES} "
                        "values (anchors and aliases repeated inside each other, an 'alias bomb'?); a model or "
                        "study file is small data: write the values out, without nested aliases.")
        open_.discard(id(node))
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root)


def resolve(name_or_path: str | Path, kind: str) -> Path:
    """Find a library entry by name (``"job_training"``) or return the given path."""
    error = StudyError if kind == "studies" else ModelSpecError
    if not isinstance(name_or_path, (str, os.PathLike)):
        hint = " A model written as a dict is read with SCM.from_dict." if isinstance(name_or_path, dict) else ""
        raise error(f"expected the name of a {KINDS[kind]} in the library or the path of a YAML file, got "
                    f"{type(name_or_path).__name__} {name_or_path!r}.{hint}")
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    cand = library_dir(kind) / f"{name_or_path}.yaml"
    if cand.is_file() and len(p.parts) == 1:  # a bare name: the library's, even beside a folder of that name
        return cand
    if p.exists():  # a folder: read_yaml says what is wrong with it
        return p
    names = list_library(kind)
    raise error(
        f"no {KINDS[kind]} called {str(name_or_path)!r} in the library and no such file."
        f"{suggest(str(name_or_path), names)} Available: {names}."
    )


def list_library(kind: str) -> list[str]:
    """Names of the shipped ``models`` or ``studies``.

    Examples
    --------
    >>> "job_training" in list_library("models")
    True
    """
    if kind not in KINDS:
        raise ModelSpecError(f"the library holds {sorted(KINDS)}, not {kind!r}.{suggest(str(kind), KINDS)}")
    d = library_dir(kind)
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_model(name_or_path: str | Path):
    """Load a model from the library by name, or from a YAML file path.

    Examples
    --------
    >>> scm = load_model("job_training")
    >>> "re78" in scm.names
    True
    """
    from causal_wm.spec import SCM

    path = resolve(name_or_path, "models")
    data, lines = read_yaml(path)
    return SCM.from_dict(data, source=str(path), lines=lines)
