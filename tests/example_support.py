"""What the tests of examples/ share: run a script as a user runs it, read the run info saved with its
checkpoint, import it as a module. (tests/ is on sys.path under pytest.)"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import minigrad as mg

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(script, *args, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python examples/<script> args...` in a subprocess started in `cwd`, with this source tree first on
    PYTHONPATH; `script` is a file name in examples/ or a path. Returns the completed process (text output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


def run_info(out_dir) -> dict:
    """The JSON `extra` an example saved with <out_dir>/ckpt.safetensors (settings, history, ...)."""
    return json.loads(mg.io.load_metadata(pathlib.Path(out_dir) / "ckpt.safetensors")["extra"])


def load_example(name: str):
    """examples/<name>.py as a module, with examples/ on sys.path (for its `from common import ...`)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
