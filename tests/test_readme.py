"""Tier a: the documentation's Python examples and tables.

- Every ```python block of README.md and of each docs/*.md page runs on its own, in a
  fresh process (nothing carries over from the blocks before it), and every
  ``print(...)  # output`` comment in it is a line that block prints (the text before
  the first ":" of the comment; what follows a ":" is commentary).
- The README's first example prints the Variable repr the README shows.
- Every performance table between ``<!-- table: FILE.json [OPTIONS] -->`` and
  ``<!-- end table -->`` is exactly what ``python -m varstore.bench.tables FILE.json
  [OPTIONS]`` prints for it, so its figures and ratios are the results file's.
- Relative links between the pages point at files that exist, and at headings they have.

Examples that need a GPU, MPI or several processes are ```bash or ```text blocks, not
```python ones: this test runs every ```python block on a CPU-only host, in one process.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
OUTPUT_COMMENT = re.compile(r"^\s*print\(.*\)\s+# (.+)$", re.M)


def _name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _blocks() -> list:
    return [(page, i, textwrap.dedent(block))
            for page in PAGES for i, block in enumerate(BLOCK.findall(page.read_text(encoding="utf-8")))]


BLOCKS = _blocks()


def _run(block: str) -> subprocess.CompletedProcess:
    # The simulator is for the kernel tier's own process; the examples use the real backends.
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)


def test_the_pages_have_examples():
    pages = {page for page, _, _ in BLOCKS}
    assert README in pages and len(pages) >= 6, sorted(_name(p) for p in pages)
    printed = [c for _, _, block in BLOCKS for c in OUTPUT_COMMENT.findall(block)]
    assert len(printed) >= 20, printed


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS,
                         ids=[f"{_name(page)}-{index}" for page, index, _ in BLOCKS])
def test_example_runs_alone_and_prints_what_its_comments_say(page, index, block):
    out = _run(block)
    assert out.returncode == 0, f"{_name(page)}, Python block {index}:\n{block}\n{out.stderr}"
    lines = [line.strip() for line in out.stdout.splitlines()]
    for comment in OUTPUT_COMMENT.findall(block):
        expected = comment.split(":")[0].strip()
        assert expected in lines, f"{_name(page)}, Python block {index} says {expected!r}; it printed {lines}"


def test_readme_first_example_prints_the_documented_repr():
    text = README.read_text(encoding="utf-8")
    documented = re.search(r"# (<Variable path=variable,.*?\]\]>)", text, re.S).group(1).replace("\n# ", "\n")
    block = next(block for page, _, block in BLOCKS if page == README and "<Variable path=variable," in block)
    out = _run(block)
    assert out.returncode == 0, out.stderr
    assert documented in out.stdout, out.stdout


MARKED = re.compile(r"<!-- table: (?P<args>[^\n]*?) -->\n(?P<table>.*?)<!-- end table -->", re.S)


def test_readme_shows_the_cpu_and_h100_tables():
    marked = [m.group("args").split()[0] for m in MARKED.finditer(README.read_text(encoding="utf-8"))]
    assert marked[0].startswith("bench/results/cpu-calls-") and marked[1:3] == [
        "bench/results/cpu-region-casts-slice-cast-1.json", "bench/results/h100-quick.json"], marked


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_marked_tables_are_the_generators_output(page):
    from varstore.bench import tables

    for match in MARKED.finditer(page.read_text(encoding="utf-8")):
        generated = tables.render(tables.marker_arguments(match.group("args"), str(ROOT)))
        assert match.group("table").strip() == generated.strip(), (
            f"{_name(page)}: the table for {match.group('args')!r} is not what the results file gives; "
            f"run `python -m varstore.bench.tables --update {_name(page)}` from the repository root")


LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")


def _anchors(page: pathlib.Path) -> set:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped,
    spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", BLOCK_OR_FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


BLOCK_OR_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_relative_links_point_at_files_and_headings(page):
    for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        linked = (page.parent / target) if target else page
        assert linked.exists(), f"{_name(page)} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{_name(page)} links to {target}#{anchor}, a heading it lacks"


def test_the_readme_stays_one_screenful_of_pages():
    """README.md is the entry point (at most 250 lines); the full guide is in docs/."""
    assert len(README.read_text().splitlines()) <= 250


def test_the_layout_names_every_module():
    layout = README.read_text().split("## Layout", 1)[1]
    layout = layout[layout.index("```"):][3:]
    layout = layout[:layout.index("```")]
    words = set(re.findall(r"[A-Za-z_]+", layout))
    root = README.parent
    missing = []
    for folder in ("varstore", "varstore/backends", "varstore/distributed", "bench"):
        for path in sorted((root / folder).glob("*.py")):
            name = path.stem
            if name.startswith("__") or name in words or name.startswith("ops_") and "ops_" in layout:
                continue
            missing.append(f"{folder}/{path.name}")
    assert not missing, f"README's Layout leaves out {missing}"
