"""The package's import graph: layers that point one way (an import reaches only the same
layer or one below), no cycle between modules, and the package importable without bcc.
Function-level imports count too: they are still arrows."""
import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sakura_uring"

# lowest first; a module belongs to the first layer one of whose prefixes it starts with
LAYERS = [
    ("foundations", ["errors", "ops", "resources", "fork", "_native", "trace.report"]),
    ("BPF environment", ["bpfenv"]),
    ("probing, chains, results", ["probe", "chain", "params", "result"]),
    ("the link engine", ["core", "pools", "reaper", "publish", "maps", "prepared", "ring", "aio",
                         "__init__"]),
    ("kernel handlers, tracer", ["kernel", "trace"]),
    ("applications and tools", ["httpd", "bench", "cli", "matrix"]),
]


def module_name(path: Path) -> str:
    """Dotted name inside the package ("kernel.ring", "httpd" for httpd/__init__.py,
    "__init__" for the package itself)."""
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def layer(mod: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(mod == p or mod.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{mod} is in no layer: add it to LAYERS")


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules a file imports (relative or absolute, anywhere in it)."""
    package = list(path.relative_to(PKG).parent.parts)       # the file's own package
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            target = package[:len(package) - (node.level - 1)] + (
                node.module.split(".") if node.module else [])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sakura_uring"):
            target = node.module.split(".")[1:]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sakura_uring"):
                    out.add(".".join(a.name.split(".")[1:]) or "__init__")
            continue
        else:
            continue
        for a in node.names:            # `from . import ops` names a module, else the package
            sub = ".".join(target + [a.name])
            out.add(sub if sub in known else ".".join(target) or "__init__")
    return {m for m in out if m in known}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PKG.rglob("*.py") if p.name != "build.py"}
    return {m: imports(p, set(files)) - {m} for m, p in files.items()}


def test_every_import_points_down_or_across():
    up = [(m, t) for m, ts in graph().items() for t in ts if layer(t) > layer(m)]
    assert not up, "imports that point up a layer: " + ", ".join(
        f"{m} ({LAYERS[layer(m)][0]}) -> {t} ({LAYERS[layer(t)][0]})" for m, t in up)


def test_no_cycle_between_modules():
    g = graph()
    # a package's __init__ gathering its submodules is not a cycle with them
    edges = {m: {t for t in ts if not m.startswith(t + ".") and not t == "__init__"}
             for m, ts in g.items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in edges.get(m, ()):
            visit(t)
        stack.pop()
    for m in sorted(edges):
        visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_known_arrows():
    g = graph()
    assert "bpfenv" in g["probe"] and "bpfenv" in g["kernel.program"]
    assert "resources" in g["trace.dispatch"] and "ops" in g["chain"]


def test_the_link_engine_imports_without_bcc():
    # bcc is imported only when something loads BPF
    code = ("import sys, sakura_uring as su\n"
            "c = su.Chain(); c.nop()\n"
            "with su.Ring(8) as r: assert r.run(c).ok\n"
            "assert 'bcc' not in sys.modules, 'bcc was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
