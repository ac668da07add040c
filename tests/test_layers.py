"""The package's layers: every import points down (or within a layer), and no modules form a cycle.

Imports inside functions count like top-level ones. README "Layout" lists what each layer owns.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Lowest first; a module may import its own layer and the layers before it.
LAYERS = (
    ("games",),
    ("jaxplay.errors",),
    ("jaxplay.sharding", "jaxplay.compiling"),
    ("jaxplay.models",),
    ("jaxplay.text",),
    ("jaxplay.rl",),
    ("jaxplay.evaluation",),
    ("jaxplay.run",),
    ("jaxplay.cli", "jaxplay.main"),
    ("jaxplay.benchmarks",),
)
PACKAGES = ("games", "jaxplay")


def module_names() -> dict[str, pathlib.Path]:
  names = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob("*.py")):
      parts = path.relative_to(ROOT).with_suffix("").parts
      names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return names


def imported_modules(path: pathlib.Path, known: set[str]) -> set[str]:
  """The project modules `path` imports anywhere in its code (`from a import b` counts b when b
  is a module, else a)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      candidates = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      candidates = [f"{node.module}.{alias.name}" for alias in node.names]
      if not all(name in known for name in candidates):  # Some names are not modules.
        candidates.append(node.module)
    else:
      continue
    for name in candidates:
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name:
        found.add(name)
  return found


def layer(module: str) -> int:
  if module == "jaxplay":  # The empty top package.
    return 0
  for index, prefixes in enumerate(LAYERS):
    if any(module == p or module.startswith(p + ".") for p in prefixes):
      return index
  raise AssertionError(f"{module} is in no layer of tests/test_layers.py LAYERS")


def import_graph() -> dict[str, set[str]]:
  names = module_names()
  graph = {}
  for module, path in names.items():
    # A package's __init__ importing its own modules (games registers its games) is not a cycle.
    graph[module] = {m for m in imported_modules(path, set(names))
                     if m != module and not m.startswith(module + ".")}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state = {}  # module -> 1 visiting, 2 done
  stack = []

  def visit(module):
    state[module] = 1
    stack.append(module)
    for dep in sorted(graph[module]):
      if state.get(dep) == 1:
        return stack[stack.index(dep):] + [dep]
      if dep not in state and (cycle := visit(dep)):
        return cycle
    stack.pop()
    state[module] = 2
    return None

  for module in sorted(graph):
    if module not in state and (cycle := visit(module)):
      return cycle
  return None


def test_every_module_has_a_layer():
  for module in module_names():
    layer(module)


def test_imports_point_down():
  upward = [f"{module} (layer {layer(module)}) imports {dep} (layer {layer(dep)})"
            for module, deps in import_graph().items() for dep in sorted(deps)
            if layer(dep) > layer(module)]
  assert not upward, "\n".join(upward)


def test_no_import_cycles():
  assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"a", "b"}}, None),
])
def test_find_cycle_finds_cycles(graph, cycle):
  assert find_cycle(graph) == cycle


def test_an_upward_import_inside_a_function_counts(tmp_path):
  module = tmp_path / "m.py"
  module.write_text("def f():\n  from jaxplay.run import train\n  return train\n")
  assert imported_modules(module, {"jaxplay.run.train", "jaxplay.run"}) == {"jaxplay.run.train"}
