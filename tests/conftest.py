from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every test (and every command a test starts) uses a cache folder of its own session."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("DR_CACHE_DIR")
    os.environ["DR_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("DR_CACHE_DIR", None)
    else:
        os.environ["DR_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def cache_dir(_private_cache) -> Path:
    return _private_cache


@pytest.fixture(scope="session")
def builtin_manifest(cache_dir):
    """The built-in manifest, built once per session into the session's cache."""
    from dr.assets_manifest.build import ensure_builtin_manifest
    from dr.assets_manifest.manifest import load_manifest

    return load_manifest(ensure_builtin_manifest(cache_dir))


def run_app(*argv: str) -> int:
    """Run `dr-data ARGV` in this process through the real app (its output goes to pytest's capture);
    returns the exit status."""
    from dr.cli.data_app import app
    from dr.cli.runner import run

    return run(app, "dr-data", list(argv))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `dr-data ARGS` in a fresh interpreter, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "dr.cli.data_app", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)
