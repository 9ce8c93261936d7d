"""The results document (what ``--json`` writes) and the table printed at the end."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys

import varstore as vs

from .measure import parse_sizes

PACKAGES = ("numpy", "numba", "numba-cuda", "ml_dtypes", "cupy-cuda13x", "cupy-cuda12x", "torch", "keras",
            "safetensors")


def format_size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def document(ctx, op_list, sizes, quick, plan, rows, seconds) -> dict:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": (" ".join(["varstore"] + sys.argv[1:]) if sys.argv and "varstore" in sys.argv[0]
                    else " ".join(sys.argv)),
        "varstore": vs.__version__,
        "commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": ctx.backend.name,
        "device": ctx.device,
        **ctx.native.describe(),
        "clock": ctx.native.clock.name,
        "versions": {p: v for p in PACKAGES if (v := _version(p))},
        "torch_baseline": ctx.torch.device if ctx.torch else None,
        "quick": quick,
        "plan": {"warmup": plan.warmup, "min_repeats": plan.min_repeats, "max_repeats": plan.max_repeats,
                 "budget_s_per_variant": plan.budget_s},
        "sizes": list(sizes),
        "ops": {op.name: {"summary": op.summary, "metric": op.metric} for op in op_list},
        "rotation_bytes": ctx.native.rotation_bytes,
        "seconds": round(seconds, 1),
        "left_out": dict(ctx.left_out),
    }
    out_rows = [row.as_dict() for row in rows]
    failures = [f"{row.op} {format_size(row.size_bytes)}: {row.check}" for row in rows if row.check != "ok"]
    return {"meta": meta, "rows": out_rows, "failures": failures}


def summary(doc: dict) -> str:
    """The closing line of a run: how many result checks passed, and which baselines
    were left out and why."""
    checks = len(doc["rows"])
    failed = len(doc["failures"])
    line = f"all {checks} checks passed" if not failed else f"{failed} of {checks} checks FAILED"
    left_out = doc["meta"].get("left_out") or {}
    if left_out:
        line += "; baselines left out: " + "; ".join(f"{name} ({why})" for name, why in left_out.items())
    return line


def merge(docs: list) -> dict:
    """One document from runs of parts of the suite (``--ops`` groups run one by one)."""
    if not docs:
        raise ValueError("merge() needs at least one results document; received none.")
    meta = dict(docs[0]["meta"])
    meta["ops"] = {name: op for doc in docs for name, op in doc["meta"]["ops"].items()}
    meta["seconds"] = round(sum(doc["meta"]["seconds"] for doc in docs), 1)
    meta["commands"] = [doc["meta"]["command"] for doc in docs]
    return {"meta": meta, "rows": [row for doc in docs for row in doc["rows"]],
            "failures": [failure for doc in docs for failure in doc["failures"]]}


def load(paths) -> dict:
    """The results in the JSON files ``paths`` (``--json`` output), merged."""
    import json

    docs = []
    for path in paths:
        with open(path) as f:
            docs.append(json.load(f))
    return merge(docs)


def _ratio_text(ratios: dict, variants: dict) -> str:
    parts = [f"{label} {format_time(variants[label]['median_s'])} ({ratio:.2f}x)" for label, ratio in ratios.items()]
    return "; ".join(parts)


def table(doc: dict) -> str:
    """The rows as aligned text. ``ratio`` is baseline time / ours: above 1, ours is faster."""
    header = ["op", "size", "ours", "host/call", "GB/s", "of ceiling", "baselines: time (baseline/ours)", "check"]
    lines = [header]
    for row in doc["rows"]:
        size = format_size(row["size_bytes"])
        if row["skipped"]:
            lines.append([row["op"], size, "skipped", "", "", "", row["skipped"][:70], ""])
            continue
        ours = row["variants"].get("ours")
        if ours is None:
            lines.append([row["op"], size, "", "", "", "", "", row["check"][:90]])
            continue
        fraction = row["fraction_of_ceiling"]
        ceiling = f"{fraction:.2f} of {row['ceiling']['kind']}" if fraction is not None else ""
        host = format_time(ours["host_median_s"]) if row["size_bytes"] < 2**20 else ""
        gbps = f"{ours['GBps']:.1f}" if ours.get("GBps") else ""
        lines.append([row["op"], size, format_time(ours["median_s"]), host, gbps, ceiling,
                      _ratio_text(row["speedup_vs"], row["variants"]), "ok" if row["check"] == "ok" else "FAILED"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    meta = doc["meta"]
    text.append("")
    text.append(f"{meta['device_name']} ({meta['backend']} backend), {meta['clock']}; "
                f"{'quick' if meta['quick'] else 'full'} run of {meta['seconds']:.0f} s; "
                f"ceilings: copy = {meta['ceiling_copy']}, fill = {meta['ceiling_fill']}, h2d = {meta['ceiling_h2d']}")
    for failure in doc["failures"]:
        text.append(f"FAILED {failure}")
    return "\n".join(text)


def _short_label(label: str) -> str:
    return label.replace("torch torch", "torch")


def markdown(doc: dict, sizes) -> str:
    """A compact Markdown table: per op, at each of ``sizes``, ours' time (µs below 1 MiB,
    else GB/s and the fraction of the ceiling) and every baseline's time / ours'."""
    by_key = {(r["op"], r["size_bytes"]): r for r in doc["rows"]}
    header = "| op | " + " | ".join(f"{format_size(s)}: ours | {format_size(s)}: baseline/ours" for s in sizes) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(sizes))]
    for name in doc["meta"]["ops"]:
        cells = [f"`{name}`"]
        for size in sizes:
            row = by_key.get((name, size))
            if row is None or row["skipped"] or not row["variants"].get("ours"):
                cells += ["skipped" if row and row["skipped"] else "", ""]
                continue
            ours = row["variants"]["ours"]
            if row["check"] != "ok":
                text = "CHECK FAILED"
            elif size < 2**20 or not ours.get("GBps") or doc["meta"]["ops"][name]["metric"] == "us":
                text = format_time(ours["median_s"])
            else:
                fraction = row["fraction_of_ceiling"]
                gbps = ours['GBps']
                text = (f"{gbps:,.0f}" if gbps >= 100 else f"{gbps:.3g}") + " GB/s"
                if fraction:
                    text += f" ({fraction:.2f} of {row['ceiling']['kind']})"
            ratios = ", ".join(f"{_short_label(label)} {ratio:.2f}x" for label, ratio in row["speedup_vs"].items())
            cells += [text, ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m varstore.bench.report [--markdown 4KiB,1GiB] RESULTS.json [MORE.json ...]``:
    the table again, or a compact Markdown table at the sizes given."""
    args = list(sys.argv[1:] if argv is None else argv)
    sizes = None
    if args[:1] == ["--markdown"] and len(args) >= 2:
        sizes, args = parse_sizes(args[1]), args[2:]
    if not args:
        print("usage: python -m varstore.bench.report [--markdown SIZES] RESULTS.json [MORE.json ...]", file=sys.stderr)
        return 2
    doc = load(args)
    print(markdown(doc, sizes) if sizes else table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
