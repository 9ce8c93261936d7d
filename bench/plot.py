"""``--plot FILE.png``: throughput against size, one panel per op, the ceiling dashed.

Also ``python -m varstore.bench.plot OUT.png RESULTS.json [MORE.json ...]`` draws saved
runs (e.g. measured on a GPU host without matplotlib, one ``--ops`` group at a time).
"""

from __future__ import annotations

import math
import sys

from .report import format_size, load

BASELINE_STYLES = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def require_matplotlib():
    """matplotlib's pyplot on the Agg backend.

    Raises:
        RuntimeError: matplotlib is not installed (checked before a run, not after it).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError(
            f"`--plot` needs matplotlib ({error}); install it with `pip install matplotlib` or "
            f"`pip install 'varstore[bench]'`."
        ) from None
    return plt


def _value(row: dict, entry: dict, metric: str):
    if metric == "us":
        return entry["median_s"] * 1e6
    return entry.get("GBps")


def plot(doc: dict, path: str) -> None:
    plt = require_matplotlib()
    names = list(doc["meta"]["ops"])
    columns = min(5, len(names))
    lines = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(3.6 * columns, 2.9 * lines + 0.9), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):  # spare panels are hidden
        metric = doc["meta"]["ops"][name]["metric"]
        rows = [r for r in doc["rows"] if r["op"] == name and not r["skipped"] and r["variants"].get("ours")]
        series: dict[str, list] = {}
        for row in rows:
            for label, entry in row["variants"].items():
                value = _value(row, entry, metric)
                if value:
                    series.setdefault(label, []).append((row["size_bytes"], value))
            if row.get("ceiling") and metric != "us":
                series.setdefault("ceiling", []).append((row["size_bytes"], row["ceiling"]["GBps"]))
        styles = iter(BASELINE_STYLES)
        for label, points in series.items():
            xs, ys = zip(*points, strict=True)
            if label == "ours":
                ax.plot(xs, ys, "o-", color="tab:blue", lw=2.2, ms=4, label="varstore", zorder=3)
            elif label == "ceiling":
                kind = rows[0]["ceiling"]["kind"]
                ax.plot(xs, ys, "--", color="black", lw=1.2, label=f"ceiling ({kind})")
            else:
                ax.plot(xs, ys, ".-", color=next(styles, "gray"), lw=1, ms=3, label=label)
        failed = [r for r in doc["rows"] if r["op"] == name and r["check"] != "ok"]
        ax.set_title(name + ("  [CHECK FAILED]" if failed else ""), fontsize=9, color="red" if failed else "black")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({r["size_bytes"] for r in rows})
        ax.set_xticks(ticks)
        ax.set_xticklabels([format_size(t).replace(" ", "") for t in ticks], fontsize=6, rotation=45)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("µs per call" if metric == "us" else "GB/s", fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
        if series:
            ax.legend(fontsize=5.5, loc="best")
    meta = doc["meta"]
    figure.suptitle(
        f"varstore bench ({'quick' if meta['quick'] else 'full'}): {meta['device_name']}, {meta['backend']} backend, "
        f"{meta['date'][:10]}. Throughput = bytes moved / median time; higher is better (µs panels: lower).",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or not argv[0].endswith(".png"):
        print("usage: python -m varstore.bench.plot OUT.png RESULTS.json [MORE.json ...]", file=sys.stderr)
        return 2
    plot(load(argv[1:]), argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
