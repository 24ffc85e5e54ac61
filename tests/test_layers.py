"""The floor plan (docs/architecture.md), held by the tree itself.

Floors from the ground up: contract → firmware_bridge → agent → provisioning → center →
simulators → picket → bench. A module imports only its own package or a lower floor, the
center imports no agent code at all, the contract imports no other Picket package; imports
inside functions count as much as those at the top. No package module is over 600 lines,
and no two modules import each other, directly or round a longer circle.

The checker reads source with `ast` (nothing is imported), and is itself tested on a small
tree with one import of each forbidden kind, so it cannot pass by reading nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = (
    "contract",
    "firmware_bridge",
    "agent",
    "provisioning",
    "center",
    "simulators",
    "picket",
    "bench",
)
FORBIDDEN = {("center", "agent")}  # what both ends share is the contract
MAX_LINES = 600
FIRMWARE = Path("firmware_bridge/firmware")  # MicroPython: imports only its own modules


@dataclass(frozen=True, slots=True)
class Import:
    path: Path  # relative to the root
    line: int
    module: str  # the dotted name imported

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.module}"


def package_files(root: Path) -> Iterator[Path]:
    for pkg in FLOORS:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root)
            if not rel.is_relative_to(FIRMWARE):
                yield rel


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path, rel: Path) -> Iterator[Import]:
    """Every import in the file, at any depth (inside functions too); relative imports are
    resolved against the module's package."""
    tree = ast.parse((root / rel).read_text(encoding="utf-8"), str(rel))
    package = module_name(rel).split(".")
    if rel.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(rel, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[: len(package) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            # `from agent.gnss import nmea` imports the module agent.gnss.nmea
            for alias in node.names:
                yield Import(rel, node.lineno, f"{base}.{alias.name}" if base else alias.name)


def against_floors(root: Path) -> list[Import]:
    floor = {name: i for i, name in enumerate(FLOORS)}
    bad = []
    for rel in package_files(root):
        own = rel.parts[0]
        for imp in imports(root, rel):
            top = imp.module.split(".")[0]
            if top not in floor or top == own:
                continue
            if floor[top] > floor[own] or (own, top) in FORBIDDEN:
                bad.append(imp)
    return bad


def too_long(root: Path) -> list[str]:
    out = []
    for rel in package_files(root):
        n = len((root / rel).read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            out.append(f"{rel}: {n} lines")
    return out


def cycles(root: Path) -> list[list[str]]:
    """Circles of imports between the packages' modules (`from p import m` counts as an
    import of module p.m when that is a module, else of p)."""
    files = {module_name(rel): rel for rel in package_files(root)}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, rel in files.items():
        for imp in imports(root, rel):
            target = imp.module
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                # a package's __init__ is not a circle with its own modules
                graph[name].add(target)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                ring = path[path.index(nxt) :]
                first = ring.index(min(ring))  # each circle read from its first name
                ring = ring[first:] + ring[:first]
                found.append([*ring, ring[0]])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


# --- the repository -------------------------------------------------------------------------


def test_no_import_runs_up_a_floor_or_from_the_center_into_the_agent() -> None:
    bad = against_floors(ROOT)
    assert not bad, "imports against the floors (docs/architecture.md):\n" + "\n".join(
        map(str, bad)
    )


def test_the_contract_imports_no_other_picket_package() -> None:
    others = set(FLOORS) - {"contract"}
    bad = [
        imp
        for rel in package_files(ROOT)
        if rel.parts[0] == "contract"
        for imp in imports(ROOT, rel)
        if imp.module.split(".")[0] in others
    ]
    assert not bad, "\n".join(map(str, bad))


def test_no_package_module_is_over_600_lines() -> None:
    assert not too_long(ROOT), "split by idea:\n" + "\n".join(too_long(ROOT))


def test_no_circle_of_imports() -> None:
    found = cycles(ROOT)
    assert not found, "\n".join(" → ".join(c) for c in found)


def test_every_package_and_room_is_on_the_map() -> None:
    """docs/architecture.md names every package and every room of agent/."""
    text = (ROOT / "docs/architecture.md").read_text(encoding="utf-8")
    rooms = [f"{p}/" for p in FLOORS] + [
        f"agent/{d.name}/"
        for d in sorted((ROOT / "agent").iterdir())
        if d.is_dir() and (d / "__init__.py").exists()
    ]
    missing = [r for r in rooms if f"`{r}" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"


# --- the checker, on a tree made to break every rule once -----------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_the_checker_finds_each_kind_of_forbidden_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "contract/__init__.py": "",
            "contract/ok.py": "import json\n",
            "contract/up.py": "from agent.device import x\n",
            "agent/__init__.py": "",
            "agent/device.py": "from contract import ok\nfrom firmware_bridge.frame import f\n",
            "agent/late.py": "def f():\n    import center.store\n",
            "center/__init__.py": "",
            "center/side.py": "from agent import device\n",
            "center/rel.py": "from .side import y\n",
            "firmware_bridge/__init__.py": "",
            "firmware_bridge/frame.py": "",
            "firmware_bridge/firmware/main.py": "import center\n",  # MicroPython: not read
            "simulators/__init__.py": "",
            "simulators/run.py": "from picket.progress import Progress\n",
        },
    )
    assert sorted(map(str, against_floors(root))) == [
        "agent/late.py:2 imports center.store",
        "center/side.py:1 imports agent.device",
        "contract/up.py:1 imports agent.device.x",
        "simulators/run.py:1 imports picket.progress.Progress",
    ]


def test_the_checker_finds_circles_and_long_modules(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "center/__init__.py": "from center import store\n",  # its own module: no circle
            "center/store.py": "from center.status import S\n",
            "center/status.py": "def f():\n    from center import pgstore\n",
            "center/pgstore.py": "import center.store\n",
            "center/long.py": "x = 1\n" * (MAX_LINES + 1),
        },
    )
    assert cycles(root) == [["center.pgstore", "center.store", "center.status", "center.pgstore"]]
    assert not cycles(_tree(tmp_path / "fixed", {"center/pgstore.py": "from center import x\n"}))
    assert too_long(root) == [f"center/long.py: {MAX_LINES + 1} lines"]
