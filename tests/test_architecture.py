"""The layout's rules, read from the code's own imports (``ast``, every import statement,
function-level ones included): no import cycle between modules, and no module importing
from a layer above its own (``docs/architecture.md``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    # 0 foundation: records, errors, storage, logs; import nothing of apa above them
    "apa": 0,
    "apa.log": 0,
    "apa.storage": 0,
    "apa.errors": 0,
    "apa.schema": 0,
    "apa.text": 0,
    "apa.scores": 0,
    "apa.phones": 0,
    "apa.failpoints": 0,
    # 1 inputs and formats: audio, texts, corpora, tables, metrics, the answer format, the
    # scorer interface and the preparation of an utterance
    "apa.audio": 1,
    "apa.lexicon": 1,
    "apa.tables": 1,
    "apa.data": 1,
    "apa.metrics": 1,
    "apa.report": 1,
    "apa.lmm": 1,
    "apa.scorer": 1,
    "apa.prepare": 1,
    # 2 models and speech: model families and loading; espeak-ng speech and corpora
    "apa.models": 2,
    "apa.synth": 2,
    # 3 engines: the LMM scoring engine and the GOP baseline
    "apa.engine": 3,
    "apa.gop": 3,
    # 4 scoring and training: pipelines, fine-tuning, the batch job's stages
    "apa.scoring": 4,
    "apa.finetune": 4,
    "apa.batch": 4,
    # 5 applications: the command line, test support
    "apa.cli": 5,
    "apa.cli_options": 5,
    "apa.testing": 5,
    # 6 Ray adapters, outside the core
    "ray_jobs": 6,
    "serve": 6,
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("apa", "ray_jobs", "serve"):
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name lives in (``apa.x.y`` for ``apa.x.y.f``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    name = module
    while name not in LAYERS:
        if "." not in name:
            raise KeyError(f"{module} is in no layer: add it to LAYERS and docs/architecture.md")
        name = name.rpartition(".")[0]
    return LAYERS[name]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 80
    assert "apa.models.loading" in GRAPH["apa.engine.scorer"]
    assert "apa.models.families" in GRAPH["apa.models.builtin"]


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        _layer(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    up = sorted(t for t in GRAPH[module] if _layer(t) > _layer(module))
    assert not up, f"{module} (layer {_layer(module)}) imports from above: {up}"


def test_the_architecture_page_names_every_layer_entry() -> None:
    page = (REPO / "docs" / "architecture.md").read_text()
    missing = [name for name in LAYERS if f"`{name.replace('.', '/')}" not in page]
    assert not missing, f"docs/architecture.md does not show {missing}"
