"""The import direction of ARCHITECTURE.md, checked on the real import graph (every import
statement, including the ones inside functions), and the size of modules."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rope_jax"
CLIS = ("rope_jax.train", "rope_jax.aot", "rope_jax.analyze", "rope_jax.sample",
        "rope_jax.import_gemma", "rope_jax.results")
# Longest prefix wins.
LAYERS = {
    "rope_jax.rope": 0,
    "rope_jax.rope_scaling": 0,
    "rope_jax.angles": 0,
    "rope_jax.encodings": 0,
    "rope_jax.errors": 0,
    "rope_jax.entrypoint": 0,
    "rope_jax.config": 0,
    "rope_jax.data": 1,
    "rope_jax.sharding": 1,
    "rope_jax.model": 1,
    "rope_jax.checkpoint": 2,
    "rope_jax.weights": 2,
    "rope_jax.training": 3,
    "rope_jax.analysis": 4,
    "rope_jax.sweeps": 4,
    **{cli: 5 for cli in CLIS},
}
# Pairs that the layer order alone would allow but the house forbids.
FORBIDDEN = (
    ("rope_jax.analysis", "rope_jax.training"),  # analysis reads runs via checkpoint.rundir
    ("rope_jax.data", "rope_jax.model"),
    ("rope_jax.model", "rope_jax.data"),
    ("rope_jax.checkpoint", "rope_jax.weights"),
)
MAX_LINES = 620


def module_name(path: pathlib.Path) -> str:
  rel = path.relative_to(REPO).with_suffix("")
  parts = list(rel.parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def imports_of(path: pathlib.Path) -> set[str]:
  """Every ``rope_jax...`` module a file imports (``from a import b`` counts a and a.b)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.startswith("rope_jax"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      if node.module.startswith("rope_jax"):
        out.add(node.module)
        out.update(f"{node.module}.{a.name}" for a in node.names)
  return out


def layer(module: str) -> tuple[str, int] | None:
  best = None
  for prefix, level in LAYERS.items():
    if module == prefix or module.startswith(prefix + "."):
      if best is None or len(prefix) > len(best[0]):
        best = (prefix, level)
  return best


def _is(module: str, prefix: str) -> bool:
  return module == prefix or module.startswith(prefix + ".")


def python_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
  missing = [module_name(p) for p in python_files(PACKAGE)
             if module_name(p) != "rope_jax" and layer(module_name(p)) is None]
  assert not missing, f"modules without a layer in ARCHITECTURE.md / LAYERS: {missing}"


def test_imports_point_down():
  bad = []
  for path in python_files(PACKAGE):
    src = module_name(path)
    src_layer = layer(src)
    if src_layer is None:
      continue
    for target in imports_of(path):
      dst_layer = layer(target)
      if dst_layer is None:
        continue
      if dst_layer[1] > src_layer[1]:
        bad.append(f"{src} (layer {src_layer[1]}) imports {target} (layer {dst_layer[1]})")
      if dst_layer[1] == 5 and dst_layer[0] != src_layer[0] and not (
          src == "rope_jax.results"):
        bad.append(f"{src} imports the CLI module {target}")
      for a, b in FORBIDDEN:
        if _is(src, a) and _is(target, b):
          bad.append(f"{src} imports {target} ({a} must not import {b})")
  assert not bad, "\n".join(sorted(set(bad)))


def test_scripts_never_import_a_cli():
  bad = []
  for folder in ("experiments", "benchmarks", "launch", "tools", "configs"):
    for path in python_files(REPO / folder):
      for target in imports_of(path):
        if any(target == cli or target.startswith(cli + ".") for cli in CLIS):
          bad.append(f"{path.relative_to(REPO)} imports {target}")
  assert not bad, "\n".join(bad)


def test_the_import_checker_sees_violations(tmp_path):
  """The checker itself can fail: a planted back-edge is found."""
  planted = tmp_path / "bad.py"
  planted.write_text("def f():\n  from rope_jax.training import train_lib\n")
  assert "rope_jax.training.train_lib" in imports_of(planted)
  assert layer("rope_jax.training.train_lib")[1] > layer("rope_jax.config.base")[1]


def test_no_module_over_the_size_limit():
  big = {str(p.relative_to(REPO)): n for p in python_files(PACKAGE) + python_files(REPO / "launch")
         if (n := len(p.read_text().splitlines())) > MAX_LINES}
  assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_all_clis_import_together():
  """Flags are defined in main only: importing every CLI in one process works."""
  code = "import " + ", ".join(CLIS) + "; print('ok')"
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("module", ["rope_jax.config.base", "rope_jax.config.schema"])
def test_config_validation_is_light(module):
  """Validating a config loads nothing above layer 0."""
  code = (f"import sys, {module}\n"
          "from rope_jax.config import base\n"
          "base.validate(base.load_config('configs/tiny.py:pe=p_rope,p=0.75'))\n"
          "heavy = [m for m in sys.modules if m.startswith(('rope_jax.training', "
          "'rope_jax.model', 'rope_jax.sharding', 'rope_jax.checkpoint', 'rope_jax.analysis'))]\n"
          "print(heavy)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
