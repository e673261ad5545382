"""The folders are the architecture: tasks/ is one package per kind of stage plus what they share, the
imports between them form no circle, nothing imports upwards into the plumbing (tasks/stages, the CLI),
and each package says in its docstring what enters and what leaves."""
import ast
from pathlib import Path

from imports import PLUMBING, REPO, tasks_imports, unit

TASKS = REPO / "tasks"
PACKAGES = sorted(p.name for p in TASKS.iterdir() if (p / "__init__.py").is_file())


def package_of(path: Path) -> str:
    return path.relative_to(TASKS).parts[0].removesuffix(".py")


def package_graph() -> dict[str, set[str]]:
    graph = {name: set() for name in PACKAGES}
    for path in TASKS.rglob("*.py"):
        if path.parent == TASKS:
            continue
        src = package_of(path)
        graph[src] |= {package_of(m) for m in tasks_imports(path) if m.parent != TASKS} - {src}
    return graph


def test_tasks_is_packages_only_and_each_says_what_it_does():
    loose = sorted(p.name for p in TASKS.glob("*.py") if p.name not in ("__init__.py", "cli.py"))
    assert not loose, f"tasks/ holds packages (and the cli); move {loose} into one"
    assert set(PACKAGES) >= {"core", "records", "fetch", "formats", "sources", "prepare", "fit", "cnn", "photo",
                             "evaluate", "report", "stages"}
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((TASKS / name / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"tasks/{name}/__init__.py: say what enters and what leaves"


def test_the_packages_import_each_other_without_a_circle():
    graph = package_graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import circle: {' -> '.join(path + [node, nxt])}")
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in PACKAGES:
        if name not in state:
            visit(name, [])


def test_nothing_imports_upwards_into_the_plumbing():
    """tasks/stages (params, paths, which function) and the CLI sit on top: the packages that compute
    are handed plain values and never import them (nor read params.yaml through a Project)."""
    for path in TASKS.rglob("*.py"):
        if unit(path) in PLUMBING:
            continue
        up = sorted(m.relative_to(REPO).as_posix() for m in tasks_imports(path) if unit(m) in PLUMBING - {"tasks/__init__.py"})
        assert not up, f"{path.relative_to(REPO)} imports the plumbing {up}"
        assert "Project" not in path.read_text(), f"{path.relative_to(REPO)} sees a Project: hand it paths instead"


def test_the_shared_packages_import_nothing_above_them():
    graph = package_graph()
    assert graph["core"] == set(), graph["core"]
    assert graph["records"] <= {"core"}, graph["records"]
    assert graph["formats"] <= {"core"} and graph["sources"] <= {"core"}, (graph["formats"], graph["sources"])
