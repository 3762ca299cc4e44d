"""The benchmark's outputs: a table (rich when installed), JSON, CSV and a PNG plot."""
from __future__ import annotations

import csv
import json
import sys
import textwrap

COLUMNS = [("case", "case"), ("backend", "backend"), ("time", "median_s"), ("±", "spread"),
           ("Melem/s", "elements_per_s"), ("GB/s", "gbps"), ("roofline", "roofline_pct"),
           ("x numpy", "vs_numpy"), ("x torch", "vs_torch")]
# below this width (an 80-column terminal): no rates, short headers and cases
NARROW = 100
NARROW_COLUMNS = [("case", "case"), ("backend", "backend"), ("time", "median_s"), ("±", "spread"),
                  ("roof", "roofline_pct"), ("x np", "vs_numpy"), ("x torch", "vs_torch")]
SPREAD_FLAG = 0.25  # interquartile range over the median beyond which a row is marked noisy
NOTES = {"~": "~ : samples spread over 25% (a busy machine): the time and its ratios are uncertain; rerun",
         "!": "! : above the roofline probe, which then read low (noise): not a real share"}


def _flags(rows: list[dict]) -> dict:
    """Per row (by id): the markers its cells get, "~" on a time or ratio that rests on a noisy row,
    "!" on a share of the probe above 100%."""
    by_case = {}
    for r in rows:
        by_case.setdefault(_case(r), {})[r["backend"]] = r
    out = {}
    for r in rows:
        case = by_case[_case(r)]
        torch_row = case.get("torch-fused") or case.get("torch-foreach")
        noisy = r.get("spread", 0) > SPREAD_FLAG
        out[id(r)] = {
            "median_s": "~" if noisy else "",
            "vs_numpy": "~" if noisy or case.get("numpy", {}).get("spread", 0) > SPREAD_FLAG else "",
            "vs_torch": "~" if noisy or (torch_row or {}).get("spread", 0) > SPREAD_FLAG else "",
            "roofline_pct": "!" if (r.get("roofline_pct") or 0) > 100 and r["backend"] != "roofline" else "",
        }
    return out


def _format(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "median_s":
        return f"{value * 1e6:.1f} us" if value < 1e-3 else f"{value * 1e3:.2f} ms"
    if key == "spread":
        return f"{value * 50:.0f}%"  # half the interquartile range, relative to the median
    if key == "elements_per_s":
        return f"{value / 1e6:,.0f}"
    if key == "gbps":
        return f"{value:.1f}"
    if key == "roofline_pct":
        return f"{value:.0f}%"
    if key in ("vs_numpy", "vs_torch"):
        return f"{value:.2f}x"
    return str(value)


def _case(r: dict, narrow: bool = False) -> str:
    dtype = r["dtype"].replace("float", "f") if narrow else r["dtype"]
    return f"{r['optimizer']} {dtype} {r['problem']}"


def table(rows: list[dict], title: str, width: int | None = None) -> None:
    """The rows, a section per case; markers (see NOTES) where a figure is not to be trusted, and
    a narrow layout under NARROW columns.  width: the terminal's (default: asked)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if width is None:  # a terminal's, else (a pipe, a file) wide
        import shutil
        width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else 120
    narrow = width < NARROW
    columns = NARROW_COLUMNS if narrow else COLUMNS
    flags = _flags(rows)
    rows = [{**r, "case": _case(r, narrow), "_flags": flags[id(r)]} for r in rows]
    cells = [[("WRONG" if r.get("wrong") and key == "median_s" else
               _format(key, r.get(key)) + (r["_flags"].get(key, "") if r.get(key) is not None else ""))
              for _, key in columns] for r in rows]
    used = sorted({m for r in rows for m in r["_flags"].values() if m})
    if Console is None:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(columns)]
        print(title)
        print("  ".join(h.rjust(w) for (h, _), w in zip(columns, widths)))
        for c in cells:
            print("  ".join(x.rjust(w) for x, w in zip(c, widths)))
        for m in used:
            print(textwrap.fill(NOTES[m], width, subsequent_indent="    "))
        return
    t = Table(title=title, show_lines=False, caption="\n".join(NOTES[m] for m in used) or None)
    for header, _ in columns:
        t.add_column(header, justify="left" if header in ("case", "backend") else "right")
    previous = None
    for r, c in zip(rows, cells):
        if previous is not None and r["case"] != previous:
            t.add_section()
        c[0] = c[0] if r["case"] != previous else ""
        previous = r["case"]
        t.add_row(*c, style="bold green" if r["backend"] == "fastopt" else ("red" if r.get("wrong") else None))
    console = Console() if Console().is_terminal else Console(width=width)
    console.print(t)


def write_json(path: str, rows: list[dict], meta: dict) -> None:
    with open(path, "w") as f:
        json.dump({"machine": meta, "rows": rows}, f, indent=1)


def write_csv(path: str, rows: list[dict]) -> None:
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def plot(path: str, rows: list[dict], title: str) -> None:
    """GB/s against size, a line per backend over single tensors (model-shaped lists as labelled
    points), the roofline dashed; one panel per (optimizer, dtype)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["optimizer"], r["dtype"]) for r in rows})
    cols = min(2, len(panels))
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(7 * cols, 4.8 * n_rows), squeeze=False)
    colors = {}
    for ax, (opt, dtype) in zip(axes.flat, panels):
        mine = [r for r in rows if (r["optimizer"], r["dtype"]) == (opt, dtype) and not r.get("wrong")]
        for backend in dict.fromkeys(r["backend"] for r in mine):
            color = colors.setdefault(backend, "black" if backend == "roofline" else f"C{len(colors)}")
            line = sorted((r["numel"], r["gbps"]) for r in mine if r["backend"] == backend and r["tensors"] == 1)
            style = dict(linestyle="--") if backend == "roofline" else dict(marker="o")
            ax.plot([x for x, _ in line], [y for _, y in line], color=color, label=backend, **style)
            for r in mine:
                if r["backend"] == backend and r["tensors"] > 1:
                    ax.scatter(r["numel"], r["gbps"], color=color, marker="D" if backend != "roofline" else "_", s=40)
                    if backend == "fastopt":
                        ax.annotate(f"{r['problem']} ({r['tensors']} tensors)", (r["numel"], r["gbps"]),
                                    textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("elements per step")
        ax.set_ylabel("effective GB/s (bytes the update must move)")
        ax.set_title(f"{opt}, {dtype}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
