"""Tier a: the worked example of docs/ARCHITECTURE.md runs and prints what the file says."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md"


def test_worked_example_runs_and_prints_the_documented_loop(tmp_path):
    text = DOC.read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(example) == 1
    script = tmp_path / "clamp.py"  # a script: its element function is importable as __main__'s
    script.write_text(example[0])
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "[-1.   0.5  1. ]"
    documented = re.search(r"prints the loop the template generated:\n\n```\n(.*?)```", text, re.S).group(1)
    assert documented.strip() in out.stdout
