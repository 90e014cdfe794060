"""The per-layer report of a compilation: what each conv became and what it costs."""

from __future__ import annotations

from dataclasses import dataclass

from .decompose import conv_macs


@dataclass(frozen=True)
class LayerRow:
    """One conv of the model as the report shows it."""

    layer: str
    weight_shape: tuple
    action: str  # decomposed | kept | pre-decomposed
    method: str
    rank: int | None
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    relative_error: float | None
    note: str

    def to_dict(self) -> dict:
        return {**self.__dict__, "weight_shape": list(self.weight_shape)}


def rows_from_records(records) -> list[LayerRow]:
    """Turn the pass's LayerRecords into report rows (kept layers cost the same before and after)."""
    rows = []
    for record in records:
        choice = record.choice
        if choice is not None:
            macs_before, macs_after = choice.macs_before, choice.macs_after
            params_before, params_after = choice.params_before, choice.params_after
            method, rank = choice.method, choice.rank
            note = f"clamped from {choice.requested}" if choice.clamped else ""
        else:
            macs_before = macs_after = conv_macs(record.weight_shape, record.in_hw, record.geometry,
                                                 getattr(record, "groups", 1))
            params_before = params_after = _prod(record.weight_shape)
            method = getattr(record, "method", None) or "-"
            rank = getattr(record, "rank", None)
            note = record.reason or ""
        rows.append(LayerRow(record.name, tuple(record.weight_shape), record.action, method, rank,
                             macs_before, macs_after, params_before, params_after,
                             record.relative_error, note))
    return rows


def _prod(shape) -> int:
    total = 1
    for size in shape:
        total *= int(size)
    return total


def totals(rows: list[LayerRow]) -> dict:
    macs_before = sum(row.macs_before for row in rows)
    macs_after = sum(row.macs_after for row in rows)
    params_before = sum(row.params_before for row in rows)
    params_after = sum(row.params_after for row in rows)
    return {
        "conv_macs_before": macs_before, "conv_macs_after": macs_after,
        "conv_params_before": params_before, "conv_params_after": params_after,
        "mac_reduction": macs_before / max(macs_after, 1),
        "param_reduction": params_before / max(params_after, 1),
        "layers_decomposed": sum(row.action == "decomposed" for row in rows),
    }


def format_table(rows: list[LayerRow]) -> str:
    """A fixed-width text table, one line per conv, and a totals line."""
    header = ("layer", "weight", "action", "method", "rank", "MMACs before", "MMACs after", "rel err", "note")
    lines = [header]
    for row in rows:
        lines.append((
            row.layer, "x".join(map(str, row.weight_shape)), row.action, row.method,
            "-" if row.rank is None else str(row.rank), f"{row.macs_before / 1e6:.3f}",
            f"{row.macs_after / 1e6:.3f}", "-" if row.relative_error is None else f"{row.relative_error:.3f}",
            row.note,
        ))
    summary = totals(rows)
    lines.append((
        "total", "", f"{summary['layers_decomposed']} decomposed", "", "",
        f"{summary['conv_macs_before'] / 1e6:.3f}", f"{summary['conv_macs_after'] / 1e6:.3f}",
        "", f"{summary['mac_reduction']:.2f}x fewer conv MACs",
    ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)
