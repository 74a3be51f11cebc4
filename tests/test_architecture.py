"""The package's shape, read from its source (ast): no import cycle between raycf modules (function-local imports
and the package __init__ an import runs included), no private name imported from another module, no module over
MAX_LINES lines (the data tables excepted)."""
import ast
from pathlib import Path

import raycf

ROOT = Path(raycf.__file__).parent
MAX_LINES = 400
EXEMPT = ("data/tables/",)  # fact tables: data, not code


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["raycf", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str, int]]:
    """(module imported, name imported from it or "", line) for every raycf import anywhere in the module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "raycf"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "raycf":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub, "", node.lineno) if sub in known else (base, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs: the one named and every package __init__ above it that is not
    already running (an ancestor of the importer)."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for m, path in known.items():
        ancestors = {".".join(m.split(".")[:i]) for i in range(1, len(m.split(".")) + 1)}
        for target, _, _ in imports(m, path, known):
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                t = ".".join(parts[:i])
                if t in known and t not in ancestors and t != m:
                    edges[m].add(t)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None
    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_between_raycf_modules():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_name_is_imported_from_another_module():
    known = modules()
    bad = [f"{path.relative_to(ROOT.parent)}:{line}: {target}.{name}"
           for m, path in known.items() for target, name, line in imports(m, path, known)
           if name.startswith("_") and target != m]
    assert bad == []


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if not str(p.relative_to(ROOT)).startswith(EXEMPT) and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
