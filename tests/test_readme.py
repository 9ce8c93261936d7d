"""Tier a: the README's Python examples run, and print what the README says."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run_and_print_the_documented_repr():
    blocks = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)]
    assert blocks, "the README has Python examples"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    documented = re.search(r"# (<Variable path=variable,.*?\]\]>)", README.read_text(), re.S).group(1)
    assert documented.replace("\n# ", "\n") in out.stdout
    # Every `print(...)  # output` comment in the examples is what the line prints.
    printed = [c.split(":")[0].strip() for b in blocks for c in re.findall(r"^\s*print\(.*\)\s+# (.+)$", b, re.M)]
    assert len(printed) >= 4
    lines = out.stdout.splitlines()
    for expected in printed:
        assert any(line.strip() == expected for line in lines), f"README says {expected!r}; printed {lines}"
