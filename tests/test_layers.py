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
