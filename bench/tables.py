"""Markdown tables from a results document (the JSON ``varstore bench --json`` writes).

``python -m varstore.bench.tables FILE.json [--sizes 64MiB,...] [--ops OP,...] [--summary]
[--throughput]`` prints one table: per op and size, our median time and each baseline's,
each with its ratio, baseline time / ours (above 1, ours is faster). The ratios are the file's own
(``speedup_vs``), never recomputed; a line below the table says where the figures come
from (device, backend, clock, version, commit, date and command, all from the file).

The README's and docs' performance tables are this module's output, between
``<!-- table: FILE.json [OPTIONS] -->`` and ``<!-- end table -->`` (FILE.json relative to
the repository root, OPTIONS those of the command line); a test regenerates each one and
compares. ``python -m varstore.bench.tables --update README.md [MORE.md ...]``, run from
the repository root, rewrites every marked table of those files from its results file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys

from varstore.memory import parse_memory_limit

from .report import format_size

#: A marked table: the command line's arguments, then the table (possibly none yet).
MARKED = re.compile(r"(<!-- table: (?P<args>[^\n]*?) -->\n)(?P<table>.*?)(<!-- end table -->)", re.S)


def _digits(value: float) -> str:
    """Three significant digits, without an exponent: 3.04, 35.2, 915."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def format_time(seconds: float) -> str:
    """``3.036e-06`` -> ``"3.04 µs"``; ms and s above those."""
    if seconds < 1e-3:
        return f"{_digits(seconds * 1e6)} µs"
    if seconds < 1:
        return f"{_digits(seconds * 1e3)} ms"
    return f"{_digits(seconds)} s"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _label(label: str) -> str:
    return label.replace("torch torch", "torch")  # (the suite prefixes PyTorch's labels with "torch")


def caption(doc: dict) -> str:
    """Where the figures come from, in one line, from the document's ``meta``."""
    meta = doc["meta"]
    commit = meta.get("commit") or "unknown commit"
    if commit != "unknown commit":
        commit = commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")
    command = meta.get("commands") or [meta.get("command", "")]
    run = "quick run" if meta.get("quick") else "run"
    return (f"{meta.get('device_name', meta.get('device', '?'))} ({meta.get('backend', '?')} backend, clock: "
            f"{meta.get('clock', '?')}); a {run} of varstore {meta.get('varstore', '?')} at commit {commit} on "
            f"{str(meta.get('date', '?'))[:10]}: " + "; ".join(f"`{c}`" for c in command) + ".")


def _gbps(value: float) -> str:
    return (f"{value:,.0f}" if value >= 100 else f"{value:.3g}") + " GB/s"


def throughput(row: dict, metric: str) -> str:
    """Our GB/s and, where the row has one, the fraction of its ceiling (the copy, fill or
    host-to-device copy of the same bytes, measured in the same run) and the ceiling's GB/s; empty
    for ops timed per call (metric "us")."""
    ours = row["variants"].get("ours")
    if metric == "us" or not ours or not ours.get("GBps"):
        return ""
    text = _gbps(ours["GBps"])
    fraction, ceiling = row.get("fraction_of_ceiling"), row.get("ceiling")
    if fraction is not None and ceiling:
        text += f" ({fraction:.2f} of {ceiling['kind']}, {_gbps(ceiling['GBps'])})"
    return text


def markdown_table(doc: dict, sizes=None, ops=None, summary: bool = False, with_throughput: bool = False) -> str:
    """The rows of ``doc`` as a Markdown table, followed by :func:`caption`.

    Args:
        doc: a results document (``json.load`` of a ``--json`` file).
        sizes: byte counts to keep (None: every size in the file).
        ops: op names to keep, in the file's order (None: every op).
        summary: add a column with each op's summary (the file's ``meta["ops"]``).
        with_throughput: add a column with :func:`throughput`.

    Raises:
        ValueError: ``sizes`` or ``ops`` name something the file does not hold.
    """
    rows = doc["rows"]
    known_sizes = {row["size_bytes"] for row in rows}
    known_ops = {row["op"] for row in rows}
    if sizes is not None:
        missing = sorted(set(sizes) - known_sizes)
        if missing:
            raise ValueError(f"sizes {[format_size(s) for s in missing]} are not in the file; it has "
                             f"{[format_size(s) for s in sorted(known_sizes)]}.")
    if ops is not None:
        missing = [op for op in ops if op not in known_ops]
        if missing:
            raise ValueError(f"ops {missing} are not in the file; it has {sorted(known_ops)}.")
    summaries = {name: op.get("summary", "") for name, op in doc["meta"].get("ops", {}).items()}
    header = ["op", *(["what is timed"] if summary else []), "size", "varstore",
              *(["GB/s (of ceiling)"] if with_throughput else []), "baselines: time (baseline / varstore)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if (sizes is not None and row["size_bytes"] not in sizes) or (ops is not None and row["op"] not in ops):
            continue
        ours = row["variants"].get("ours")
        if row.get("skipped"):
            time, baselines = "skipped", row["skipped"]
        elif ours is None:
            time, baselines = row.get("check", "no result"), ""
        else:
            time = format_time(ours["median_s"]) + ("" if row.get("check", "ok") == "ok" else " (check FAILED)")
            baselines = "; ".join(f"{_label(label)} {format_time(row['variants'][label]['median_s'])} ({ratio:.2f}x)"
                                  for label, ratio in row["speedup_vs"].items())
        cells = [f"`{row['op']}`"] + ([summaries.get(row["op"], "")] if summary else [])
        cells += [format_size(row["size_bytes"]), time]
        if with_throughput:
            metric = doc["meta"].get("ops", {}).get(row["op"], {}).get("metric", "GB/s")
            cells.append("" if row.get("skipped") else throughput(row, metric))
        cells.append(baselines)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n\n" + caption(doc)


def parse_sizes(text: str) -> list:
    """``"4KiB,64MiB"`` -> byte counts."""
    return [parse_memory_limit(item) for item in text.replace(" ", "").split(",") if item]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m varstore.bench.tables",
                                     description="A Markdown table of a `varstore bench --json` results file.")
    parser.add_argument("file", help="a results file written by `varstore bench --json FILE`")
    parser.add_argument("--sizes", type=parse_sizes, help="sizes to keep, e.g. 4KiB,64MiB (default: all)")
    parser.add_argument("--ops", type=lambda text: [op for op in text.split(",") if op],
                        help="ops to keep, comma-separated (default: all)")
    parser.add_argument("--summary", action="store_true", help="add a column with each op's summary")
    parser.add_argument("--throughput", action="store_true",
                        help="add a column with our GB/s and the fraction of the ceiling measured in the same run")
    return parser


def render(argv) -> str:
    """The table the command line ``argv`` (without the program name) asks for."""
    args = _parser().parse_args(argv)
    with open(args.file, encoding="utf-8") as f:
        doc = json.load(f)
    return markdown_table(doc, sizes=args.sizes, ops=args.ops, summary=args.summary,
                          with_throughput=args.throughput)


def marker_arguments(args: str, root: str = ".") -> list:
    """The command-line arguments of a marker's ``args`` text, its results file taken
    relative to ``root``."""
    argv = shlex.split(args)
    if not argv:
        raise ValueError("a table marker names no results file: expected <!-- table: FILE.json [OPTIONS] -->")
    return [os.path.join(root, argv[0]), *argv[1:]]


def update(text: str, root: str = ".") -> str:
    """``text`` (Markdown) with every marked table regenerated from its results file."""
    return MARKED.sub(lambda m: m.group(1) + "\n" + render(marker_arguments(m.group("args"), root)) + "\n\n"
                      + m.group(4), text)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["--update"]:
            for path in argv[1:]:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                new = update(text)
                if new != text:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(new)
                print(f"{path}: {len(MARKED.findall(text))} tables, {'updated' if new != text else 'unchanged'}")
            return 0
        print(render(argv))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
