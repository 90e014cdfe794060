"""results.csv, results.json and results.md: every measurement, and the table a person reads.

Rows of emulated devices say so in their own columns (`emulated`, `emulated_by`) and, in the
Markdown table, in the target cell, so a copied row cannot lose the label.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

# Every row has these columns, in this order (None where a cell has no such value).
COLUMNS = (
    "model", "method", "rank", "target", "status", "error", "device", "where", "emulated", "emulated_by",
    "dataset", "accuracy", "accuracy_images", "top1_agreement", "max_rel_error_vs_original",
    "max_rel_error_vs_lowrank_reference", "compiler_exact", "verified_inputs",
    "conv_macs", "conv_macs_dense", "mac_reduction", "conv_params", "conv_params_dense", "param_reduction",
    "layers_decomposed", "build_bytes",
    "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_iqr", "latency_samples",
    "latency_runs_per_sample", "speedup_vs_dense",
    "torch_ms_median", "torch_ms_p10", "torch_ms_p90", "torch_ms_iqr", "torch_samples",
    "ort_ms_median", "ort_ms_p10", "ort_ms_p90", "ort_ms_iqr", "ort_samples", "baseline_errors",
    "peak_gflops", "peak_source", "kernels_ms", "kernels_gflops", "kernels_efficiency", "database", "tuned_kernels", "kernels", "tuning_trials", "tuning_seconds",
    "compile_seconds", "cell_seconds", "cached", "key",
)
KERNEL_COLUMNS = ("model", "method", "rank", "target", "kernel", "flops", "seconds", "gflops",
                  "peak_gflops", "efficiency")


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_dense: the dense cell's median latency over this cell's (same model and target)."""
    dense = {(row["model"], row["target"]): row.get("latency_ms_median") for row in rows
             if row["method"] == "dense" and row.get("status") == "ok"}
    for row in rows:
        base, mine = dense.get((row["model"], row["target"])), row.get("latency_ms_median")
        row["speedup_vs_dense"] = base / mine if base and mine else None


def machine_note() -> str:
    """Where the numbers were taken: CPU, cores and load average (timings move with the load)."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{platform.machine()} host, {os.cpu_count()} CPUs ({_cpu_name()}), load average {load}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_csv(path: Path, rows: list[dict], columns=COLUMNS) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row.get(key) is None else row.get(key) for key in columns})


def write_json(path: Path, rows: list[dict], kernels: list[dict], meta: dict) -> None:
    data = {"meta": meta, "cells": [{key: row.get(key) for key in COLUMNS} for row in rows],
            "kernels": kernels}
    path.write_text(json.dumps(data, indent=1) + "\n")


def _number(value, digits: int = 3, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    return f"{value:.{digits}f}{suffix}"


def _target_cell(row: dict) -> str:
    return row["target"] + (" (emulated)" if row.get("emulated") else "")


def markdown_table(rows: list[dict]) -> str:
    """One line per cell: what a reader compares (the CSV has everything)."""
    header = ("model", "method", "rank", "target", "accuracy", "top-1 vs PyTorch", "conv MMACs", "MAC ×",
              "params ×", "build KiB", "TVM ms (p10–p90)", "speed-up", "PyTorch ms", "ORT ms", "kernels % peak", "tuned")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if row.get("status") != "ok":
            cells = (row["model"], row["method"], row["rank"], _target_cell(row),
                     f"**failed**: {row.get('error') or ''}".replace("|", "/"))
            lines.append("| " + " | ".join(cells) + " |" + " |" * (len(header) - len(cells)))
            continue
        spread = (f"{_number(row.get('latency_ms_median'))} ({_number(row.get('latency_ms_p10'))}–"
                  f"{_number(row.get('latency_ms_p90'))})")
        tuned = "-" if not row.get("kernels") else f"{row.get('tuned_kernels')}/{row.get('kernels')}"
        cells = (row["model"], row["method"], row["rank"], _target_cell(row), _number(row.get("accuracy"), 4),
                 _number(row.get("top1_agreement"), 4),
                 _number(None if row.get("conv_macs") is None else row["conv_macs"] / 1e6, 2),
                 _number(row.get("mac_reduction"), 2, "×"), _number(row.get("param_reduction"), 2, "×"),
                 _number(None if row.get("build_bytes") is None else row["build_bytes"] / 1024, 0),
                 spread, _number(row.get("speedup_vs_dense"), 2, "×"), _number(row.get("torch_ms_median")),
                 _number(row.get("ort_ms_median")),
                 _number(None if row.get("kernels_efficiency") is None else 100 * row["kernels_efficiency"], 0, "%"),
                 tuned)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, rows: list[dict], meta: dict) -> None:
    emulated = sorted({row["emulated_by"] for row in rows if row.get("emulated") and row.get("emulated_by")})
    notes = [f"Measured on {meta['machine']}; batch 1, {meta['threads']} threads; latency: median (p10–p90) "
             f"of {meta['repeat']} samples. Accuracy on {meta['accuracy_images']} test images where the model "
             f"has a dataset. MAC ×/params ×: dense conv MACs/params over this build's."]
    if emulated:
        notes.append("Targets marked (emulated) ran on stand-ins, timings not representative: "
                     + "; ".join(emulated) + ".")
    failed = [row for row in rows if row.get("status") != "ok"]
    if failed:
        notes.append(f"{len(failed)} cell(s) failed; the reasons are in the table and in results.csv.")
    path.write_text("\n".join(["# tvm-lowrank bench", "", markdown_table(rows), "", *notes]) + "\n")
