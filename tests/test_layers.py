"""DESIGN section 1's dependency rules, checked from the imports in the code (every import, at module
level or inside a function), and `import dr` / `dr-data --help` / `dr-train --help` without torch."""

from __future__ import annotations

import ast
import subprocess
import sys


from conftest import REPO

HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors")
LAYER_OF = {"assets_manifest": "assets_manifest", "scenes": "scenes", "render": "render", "shards": "shards",
            "models": "models", "labeling": "labeling", "train": "train", "pipeline": "pipeline", "cli": "cli"}
# what each layer may import of the others (the core modules dr/*.py and shards are open to all)
ALLOWED = {
    "assets_manifest": set(),
    "scenes": {"assets_manifest"},
    "render": {"scenes", "assets_manifest"},
    "shards": set(),
    "models": set(),
    "labeling": {"models"},
    "train": {"models"},
    "pipeline": {"render", "labeling", "scenes", "assets_manifest", "models"},
    "cli": {"pipeline", "train", "render", "labeling", "scenes", "assets_manifest", "models"},
}


def _imports() -> list[tuple[str, str, int]]:
    """(module path, imported dotted name, line) of every import under dr/."""
    out = []
    for path in sorted((REPO / "dr").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                out += [(rel, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((rel, node.module, node.lineno))
    return out


def _layer(rel: str) -> str | None:
    parts = rel.split("/")
    return LAYER_OF.get(parts[1]) if len(parts) > 2 else None


def test_heavy_frameworks_only_in_models_labeling_and_train():
    bad = [(f, m, ln) for f, m, ln in _imports() if m.split(".")[0] in HEAVY
           and _layer(f) not in ("models", "labeling", "train")]
    assert not bad, bad


def test_bpy_only_in_render():
    bad = [(f, m, ln) for f, m, ln in _imports() if m.split(".")[0] == "bpy" and _layer(f) != "render"]
    assert not bad, bad


def _crossings():
    for f, m, ln in _imports():
        src = _layer(f)
        parts = m.split(".")
        if src is None or parts[0] != "dr" or len(parts) < 2 or parts[1] not in LAYER_OF:
            continue
        dst = LAYER_OF[parts[1]]
        if dst != src and dst != "shards" and dst not in ALLOWED[src]:
            yield f, m, ln


def test_dependencies_point_downwards():
    bad = list(_crossings())
    assert not bad, bad


def test_import_dr_and_the_help_of_both_commands_need_no_torch():
    code = ("import sys, dr, dr.config, dr.train.config\n"
            "from dr.cli import data_app, train_app\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r)\n"
            "print(heavy)" % (HEAVY + ("bpy", "ray"),))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    for mod in ("dr.cli.data_app", "dr.cli.train_app"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 0 and "Usage" in r.stdout, r.stderr
