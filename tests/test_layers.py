"""The house's rules, read from the sources: imports run downward only (docs/DESIGN.md, "Layers of the code"),
no module-level import cycle, no use of gin's private names, and `--help` imports neither jax nor TensorFlow."""

import ast
import os
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "jaxformer"

# Lowest first. A module may import from its own row and the rows below (the table in docs/DESIGN.md).
LAYERS = [
  ["jaxformer", "jaxformer.errors", "jaxformer.fs", "jaxformer.distributed", "jaxformer.tensorflow_import"],
  ["jaxformer.models"],
  ["jaxformer.sharding", "jaxformer.checkpoint", "jaxformer.runlock", "jaxformer.base_run"],
  ["jaxformer.data", "jaxformer.data.feature_names", "jaxformer.data.pipeline"],
  ["jaxformer.objectives"],
  ["jaxformer.data.ingest"],
  ["jaxformer.tasks"],
  ["jaxformer.data.reports", "jaxformer.train", "jaxformer.infer"],
  [
    "jaxformer.evals",
    "jaxformer.export",
    "jaxformer.plan",
    "jaxformer.sweep",
    "jaxformer.sweep_results",
    "jaxformer.sweep_launchers",
  ],
  ["jaxformer.config", "jaxformer.config_files", "jaxformer.cli"],
]
# Upward imports that are deliberate, each inside the function that needs it.
ALLOWED_UPWARD = {
  ("jaxformer.infer.bench", "jaxformer.export.to_hf"): "bench --decode --compare_hf exports the weights it times",
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = ("jaxformer", *path.relative_to(PACKAGE).with_suffix("").parts)
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


MODULES = _modules()


def _layer(module: str) -> int:
  best, rank = -1, None
  for i, row in enumerate(LAYERS):
    for prefix in row:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
        best, rank = len(prefix), i
  assert rank is not None, f"{module} is in no layer of LAYERS (add it to the table and to docs/DESIGN.md)"
  return rank


def _imports(path: pathlib.Path, top_level_only: bool) -> list[tuple[str, int]]:
  """(imported jaxformer module, line) of a source file; `from a.b import c` names a.b.c when that is a module."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  nodes = tree.body if top_level_only else list(ast.walk(tree))
  found = []
  for node in nodes:
    if isinstance(node, ast.Import):
      found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("jaxformer")]
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxformer") and not node.level:
      for alias in node.names:
        name = f"{node.module}.{alias.name}"
        found.append((name if name in MODULES else node.module, node.lineno))
  return found


def test_imports_run_downward_only():
  problems = []
  for module, path in sorted(MODULES.items()):
    for imported, line in _imports(path, top_level_only=False):
      if _layer(imported) > _layer(module) and (module, imported) not in ALLOWED_UPWARD:
        problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {imported}, a layer above it")
  assert not problems, "\n".join(problems)


def test_no_module_level_import_cycle():
  graph = {m: {i for i, _ in _imports(p, top_level_only=True) if i in MODULES and i != m} for m, p in MODULES.items()}
  state, stack = {}, []

  def visit(module):
    state[module] = "open"
    stack.append(module)
    for other in sorted(graph[module]):
      if state.get(other) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(other) :] + [other]))
      if other not in state:
        visit(other)
    stack.pop()
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module)


def test_the_package_uses_no_private_gin_names():
  bad = []
  for path in MODULES.values():
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
      if "gin.config._" in line or "gin.config_parser._" in line:
        bad.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
  assert not bad, "\n".join(bad)


HELP_PROBE = """
import sys
from jaxformer import cli
from jaxformer.cli import VERBS
argvs = [["--help"]]
for verb, spec in VERBS.items():
  argvs.append([verb, "--help"])
  if isinstance(spec[1], dict):
    argvs += [[verb, sub, "--help"] for sub in spec[1]]
for argv in argvs:
  try:
    cli.main(argv)
  except SystemExit:
    pass
heavy = sorted(m for m in ("jax", "jaxlib", "tensorflow", "flax", "seqio", "apache_beam", "torch") if m in sys.modules)
print("HEAVY", heavy, len(argvs))
"""


def test_help_of_every_verb_imports_neither_jax_nor_tensorflow():
  env = dict(os.environ)
  result = subprocess.run(
    [sys.executable, "-X", "importtime", "-c", HELP_PROBE], capture_output=True, text=True, env=env, timeout=120
  )
  assert result.returncode == 0, result.stderr[-2000:]
  heavy_line = [line for line in result.stdout.splitlines() if line.startswith("HEAVY")][0]
  assert heavy_line.startswith("HEAVY [] "), heavy_line
  assert int(heavy_line.split()[-1]) > 15  # every verb and sub-verb was asked
  imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
  assert not imported & {"jax", "tensorflow", "seqio", "flax"}, sorted(imported & {"jax", "tensorflow"})
