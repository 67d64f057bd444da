"""The package's layers, read from the source with `ast` (nothing is imported).

Layers, low to high (zoo/__init__.py's package map says the same):

    core -> models | codecs -> data | sampling | eval | checkpoints -> members -> training -> hub -> entry points

A module may import its own layer and the layers below it, never one above. `models` and `codecs`
are independent of each other, and so are `eval` and `data` (an evaluation takes what it needs as
arguments). Module-level imports between zoo modules form no cycle. Only the entry points import
Hydra or OmegaConf. Function-level imports are checked for direction too: hiding an import in a
function does not make an upward dependency acceptable.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "zoo"

# (module prefix, layer). The longest matching prefix decides; every zoo module must match one, and a new
# top-level module or package needs its own entry: "zoo" places zoo/__init__.py alone, nothing below it.
LAYERS: list[tuple[str, int]] = [
    ("zoo.core", 0),
    ("zoo.config", 0),  # the one config checker: model configs and the pre-flight check use it
    ("zoo.models", 1),
    ("zoo.codecs", 1),
    ("zoo.data", 2),
    ("zoo.sampling", 2),
    ("zoo.eval", 2),
    ("zoo.checkpoints", 2),  # reading/writing checkpoint files, rebuilding a model, LoRA: no Lightning (zoo.load)
    ("zoo.members", 3),
    ("zoo.training", 4),
    ("zoo.hub", 5),
    ("zoo.train", 6),
    ("zoo.sample", 6),
    ("zoo.export", 6),
    ("zoo.cli", 6),
    ("zoo.bench", 6),
    ("zoo.prepare", 6),  # zoo-prepare: corpus -> token shards (zoo.data.streaming does the work)
    ("zoo.lm_eval_model", 6),  # lm-evaluation-harness model `zoo` (imports lm_eval; an extra) over zoo.load
    ("zoo.serve", 6),  # zoo-serve: the HTTP app over zoo.load; zoo.serve.__main__ reads its Hydra config
    ("zoo", 6),  # zoo/__init__.py only: `zoo.load` is zoo.hub's, imported on first use
]
LAYER_NAMES = {0: "core", 1: "models/codecs", 2: "data/sampling/eval/checkpoints", 3: "members", 4: "training",
               5: "hub", 6: "entry points"}
INDEPENDENT = [("zoo.models", "zoo.codecs"), ("zoo.codecs", "zoo.models"), ("zoo.eval", "zoo.data"),
               ("zoo.data", "zoo.eval")]
HYDRA_ALLOWED = ("zoo.train", "zoo.sample", "zoo.export", "zoo.cli", "zoo.bench", "zoo.serve.__main__",
                 "zoo.prepare")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _placed_by(name: str, prefix: str) -> bool:
    return name == prefix if prefix == "zoo" else _within(name, prefix)


def layer(name: str) -> tuple[str, int]:
    """(prefix, layer) of the longest LAYERS prefix placing `name`; LookupError for a module none places."""
    matches = [(p, n) for p, n in LAYERS if _placed_by(name, p)]
    if not matches:
        raise LookupError(f"{name} matches no entry of LAYERS")
    return max(matches, key=lambda pn: len(pn[0]))


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The modules an import statement names (external ones too, by their full dotted name)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        package = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{package}.{base}" if base else package
    # `from zoo.members import image` names the submodule zoo.members.image when there is one
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports(name: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in module `name`."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.extend((target, child.lineno, not in_function) for target in _resolve(name, child))
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return found


def zoo_edges(*, module_level_only: bool = False) -> list[tuple[str, str, int]]:
    """(importer, imported zoo module, line); a module's imports of its own parent packages are left out
    (they are the implicit `import zoo.x` of any `import zoo.x.y`)."""
    edges = []
    for name in MODULES:
        for target, line, top in imports(name):
            if not _within(target, "zoo") or (module_level_only and not top) or _within(name, target):
                continue
            while target not in MODULES:  # `from zoo.hub import load`: the package zoo.hub
                target = target.rpartition(".")[0]
            edges.append((name, target, line))
    return edges


def unplaced(modules) -> list[str]:
    out = []
    for name in modules:
        try:
            layer(name)
        except LookupError:
            out.append(name)
    return out


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 40, f"found only {len(MODULES)} modules under {PKG}"
    missing = unplaced(MODULES)
    assert not missing, f"add each to LAYERS (with its layer): {missing}"


def test_a_new_top_level_module_is_not_placed_by_the_package_entry() -> None:
    """`zoo` places zoo/__init__.py only: a module added at the top (or a new package) needs its own entry."""
    assert unplaced(["zoo.newthing", "zoo.newpkg.mod", "zoo"]) == ["zoo.newthing", "zoo.newpkg.mod"]
    assert layer("zoo.serve.app") == ("zoo.serve", 6) and layer("zoo.data.streaming.module") == ("zoo.data", 2)
    assert layer("zoo.prepare") == ("zoo.prepare", 6) and layer("zoo") == ("zoo", 6)


def test_imports_point_down() -> None:
    bad = []
    for importer, imported, line in zoo_edges():
        (p_from, n_from), (p_to, n_to) = layer(importer), layer(imported)
        if n_to > n_from:
            bad.append(f"{importer} (line {line}, layer {LAYER_NAMES[n_from]}) imports {imported} "
                       f"(layer {LAYER_NAMES[n_to]}), a higher layer")
        if (p_from, p_to) in INDEPENDENT:
            bad.append(f"{importer} (line {line}) imports {imported}: {p_from} and {p_to} are independent")
    assert not bad, "imports must point down:\n  " + "\n  ".join(bad)


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for importer, imported, _ in zoo_edges(module_level_only=True):
        graph[importer].add(imported)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            dfs(name)
    assert not cycles, "module-level import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_only_entry_points_import_hydra() -> None:
    bad = [f"{name} (line {line}) imports {target}"
           for name in MODULES if not any(_within(name, p) for p in HYDRA_ALLOWED)
           for target, line, _ in imports(name) if _within(target, "hydra") or _within(target, "omegaconf")]
    assert not bad, "only zoo.train, zoo.sample, zoo.export, zoo.cli and zoo.bench may import Hydra/OmegaConf:\n  " + \
        "\n  ".join(bad)


@pytest.mark.parametrize(("importer", "imported", "expected"), [
    ("zoo.models.gpt", "zoo.training.module", "a higher layer"),
    ("zoo.models.gpt", "zoo.codecs.text", "independent"),
    ("zoo.eval.metrics", "zoo.data.base", "independent"),
])
def test_the_checks_name_the_offending_pair(monkeypatch: pytest.MonkeyPatch, importer: str, imported: str,
                                            expected: str) -> None:
    """The direction check fails, naming both modules, for an upward or a cross import."""
    real = imports
    monkeypatch.setitem(globals(), "imports", lambda name: real(name) + ([(imported, 1, True)] if name == importer
                                                                         else []))
    with pytest.raises(AssertionError, match=rf"{importer} \(line 1.*\) imports {imported}.*{expected}"):
        test_imports_point_down()


def test_the_cycle_check_finds_a_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    real = imports
    monkeypatch.setitem(globals(), "imports", lambda name: real(name) + ([("zoo.members.base", 1, True)]
                                                                         if name == "zoo.sampling" else []))
    with pytest.raises(AssertionError, match="zoo.sampling -> zoo.members.base -> zoo.sampling"):
        test_no_import_cycles()


def test_every_module_stays_within_the_size_budget() -> None:
    """STYLE.md's budget: past 400 lines a module is split by concept (the message names each one over)."""
    over = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / "zoo").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > 400}
    assert not over, f"modules over 400 lines: {over}"
