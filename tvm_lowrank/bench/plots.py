"""The benchmark's PNG plots (matplotlib, Agg: no display needed).

Speed plots (latency, speed-up) leave out emulated devices unless asked: a qemu board or PoCL
standing in for a GPU says nothing about the real device's speed. Every plot is written even with
nothing to show (it then says why), so a run always leaves the same files.
"""

from __future__ import annotations

from pathlib import Path

PLOTS = ("latency.png", "speedup_vs_macs.png", "accuracy_vs_compression.png", "roofline.png")
_METHOD_ORDER = ("dense", "tai", "cp", "rank1", "tucker2", "im2col")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _methods(rows) -> list[str]:
    found = {row["method"] for row in rows}
    return [m for m in _METHOD_ORDER if m in found] + sorted(found - set(_METHOD_ORDER))


def _colors(methods) -> dict:
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {method: cycle[i % len(cycle)] for i, method in enumerate(methods)}


def _empty(ax, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _speed_rows(rows, include_emulated: bool):
    return [row for row in rows if row.get("status") == "ok" and row.get("latency_ms_median")
            and (include_emulated or not row.get("emulated"))]


def _label(row) -> str:
    return row["method"] if row["method"] == "dense" else f"{row['method']} {row['rank']}"


_ENGINES = (("latency", "TVM", None), ("ort", "ONNX Runtime", "#999999"), ("torch", "PyTorch eager", "#cccccc"))


def plot_latency(rows, path: Path, note: str, include_emulated: bool = False) -> None:
    """Median latency per target and method/rank, p10–p90 as error bars: TVM's build, and beside
    it ONNX Runtime and PyTorch eager running the same (low-rank) program where they were timed."""
    plt = _pyplot()
    speed = _speed_rows(rows, include_emulated)
    models = list(dict.fromkeys(row["model"] for row in speed)) or ["-"]
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 3.8 * len(models)), squeeze=False)
    colors = _colors(_methods(speed))
    for ax, model in zip(axes[:, 0], models):
        mine = [row for row in speed if row["model"] == model]
        if not mine:
            _empty(ax, "no latency measured on a real device\n(emulated devices are left out)")
            continue
        width = 0.8 / len(_ENGINES)
        labelled = set()
        for i, row in enumerate(mine):
            for j, (prefix, engine, color) in enumerate(_ENGINES):
                median = row.get(f"{prefix}_ms_median")
                if not median:
                    continue
                error = [[median - row[f"{prefix}_ms_p10"]], [row[f"{prefix}_ms_p90"] - median]]
                name = engine if color else f"{engine} {row['method']}"
                label = name if name not in labelled else None
                labelled.add(name)
                ax.bar(i - 0.4 + width * (j + 0.5), median, width, yerr=error, capsize=2,
                       color=color or colors[row["method"]], edgecolor="black", linewidth=0.5, label=label)
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([f"{_label(row)}\n{row['target']}" + (" (emulated)" if row.get("emulated") else "")
                            for row in mine], fontsize=8)
        ax.set_ylabel("ms per inference (batch 1)")
        ax.set_title(f"{model}: latency per target and method (median, p10–p90)")
        ax.legend(fontsize=8)
    fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scatter(ax, points, y: str, marker_by: str) -> None:
    """points' (mac_reduction, `y`): colour by method, marker by `marker_by`, with a legend."""
    colors = _colors(_methods(points))
    markers = dict(zip(dict.fromkeys(row[marker_by] for row in points), "osD^v<>p*"))
    for row in points:
        ax.scatter(row["mac_reduction"], row[y], color=colors[row["method"]], marker=markers[row[marker_by]], s=50)
    for method, color in colors.items():
        ax.scatter([], [], color=color, label=method)
    for name, marker in markers.items():
        ax.scatter([], [], color="gray", marker=marker, label=name)


def _finish(fig, ax, path: Path, note: str, ylabel: str, title: str,
            xlabel: str = "conv MAC reduction (dense / low-rank)") -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def plot_speedup(rows, path: Path, note: str, include_emulated: bool = False) -> None:
    """Measured speed-up over dense vs the conv MAC reduction; on the diagonal the build gains
    exactly what the arithmetic shrank."""
    points = [row for row in _speed_rows(rows, include_emulated) if row.get("speedup_vs_dense")
              and row["method"] != "dense"]
    fig, ax = _pyplot().subplots(figsize=(6.5, 5))
    if not points:
        _empty(ax, "no low-rank cell with a dense cell on a real device")
    else:
        top = max(max(r["mac_reduction"] for r in points), max(r["speedup_vs_dense"] for r in points)) * 1.1
        ax.plot([1, top], [1, top], "--", color="gray", label="ideal: speed-up = MAC reduction")
        _scatter(ax, points, "speedup_vs_dense", "target")
        ax.set_xlim(0.9, top)
        ax.set_ylim(0, top)
    _finish(fig, ax, path, note, "measured speed-up over dense", "Speed-up vs MAC reduction")


def plot_accuracy(rows, path: Path, note: str) -> None:
    """Test accuracy vs conv MAC reduction, by model and method (dense at 1×)."""
    points = [row for row in rows if row.get("status") == "ok" and row.get("accuracy") is not None]
    fig, ax = _pyplot().subplots(figsize=(6.5, 5))
    if not points:
        _empty(ax, "no accuracy measured (no model with a test set)")
    else:
        _scatter(ax, points, "accuracy", "model")
    _finish(fig, ax, path, note, "top-1 accuracy on the test images", "Accuracy vs compression")


def plot_roofline(kernels, path: Path, note: str) -> None:
    """Achieved GFLOP/s of each kernel on host targets against the peak (horizontal line), by
    kernel size: small kernels sit far below the peak, whatever their schedule."""
    points = [k for k in kernels if k.get("gflops") and k.get("flops")]
    fig, ax = _pyplot().subplots(figsize=(7.5, 5))
    if not points:
        _empty(ax, "no kernel timed (per-kernel times are taken on host CPU targets)")
    else:
        groups = list(dict.fromkeys((k["model"], k["target"], k["method"], k["rank"]) for k in points))
        colors = _colors(_methods(points))  # as in the other plots: colour by method, marker by model
        markers = dict(zip(dict.fromkeys(g[0] for g in groups), "osD^v<>p*"))
        for group in groups:
            model, target, method, rank = group
            mine = [k for k in points if (k["model"], k["target"], k["method"], k["rank"]) == group]
            ax.scatter([k["flops"] / 1e6 for k in mine], [k["gflops"] for k in mine], color=colors[method],
                       marker=markers[model], s=30, alpha=0.8,
                       label=f"{model} {_label(mine[0])} on {target}")
        for peak in sorted({k["peak_gflops"] for k in points}):
            ax.axhline(peak, color="gray", linestyle="--")
            ax.text(min(k["flops"] for k in points) / 1e6, peak,
                    f" peak {peak:.0f} GFLOP/s", va="bottom", fontsize=8, color="gray")
        ax.set_xscale("log")
        ax.set_yscale("log")
    _finish(fig, ax, path, note, "achieved GFLOP/s", "Per-kernel efficiency vs peak (host CPU)",
            xlabel="kernel MFLOP (per call)")


def write_plots(out_dir: Path, rows, kernels, note: str, include_emulated: bool = False) -> list[Path]:
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in PLOTS]
    plot_latency(rows, paths[0], note, include_emulated)
    plot_speedup(rows, paths[1], note, include_emulated)
    plot_accuracy(rows, paths[2], note)
    plot_roofline(kernels, paths[3], note)
    return paths
