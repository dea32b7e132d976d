"""The layer picture in DESIGN.md, checked on the source: who may import whom."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"common", "assistant", "memory", "lora", "quant", "cli", "bench"}
# package -> our packages it must never import (anywhere, lazily inside a function too)
FORBIDDEN = {
    "common": OURS - {"common"},
    "memory": {"assistant", "lora", "quant", "cli", "bench"},
    "lora": {"assistant", "memory", "quant", "cli", "bench"},
    "quant": {"assistant", "memory", "lora", "cli", "bench"},
    "assistant": {"cli", "bench"},
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_each_layer_imports_only_what_is_below_it():
    bad = []
    for pkg, never in FORBIDDEN.items():
        for p in sorted((ROOT / pkg).rglob("*.py")):
            hit = _imports(p) & (never | ({"typer"} if pkg != "cli" else set()))
            bad += [f"{p.relative_to(ROOT)} imports {m}" for m in sorted(hit)]
    assert bad == []


def _module_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports, at the top or inside a function;
    a package's __init__ (a re-export facade) is not followed."""
    mods = {}
    for pkg in OURS - {"bench"}:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, p in mods.items():
        here = name.split(".") if p.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = ".".join((here[: len(here) - node.level + 1] if node.level else [])
                               + ([node.module] if node.module else []))
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != name and mods[t].name != "__init__.py":
                    deps.add(t)
        graph[name] = deps
    return graph


def test_no_import_circles():
    graph = _module_graph()
    assert len(graph) > 50  # the walk found the code
    state: dict[str, int] = {}
    circles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []
