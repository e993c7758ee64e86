"""The run report: one row of metrics per stage, as JSON, Markdown, a terminal table and a plot."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from compressor.io import atomic_path, write_json, write_text

#: (row key, column title, formatter) of the columns shown in tables.
_COLUMNS = (
    ("stage", "stage", str),
    ("quality", "quality", lambda v: f"{v:.4f}"),
    ("quality_drop", "drop", lambda v: f"{v:+.4f}"),
    ("params", "params", lambda v: f"{v / 1e6:.3f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"),
    ("macs", "MACs", lambda v: f"{v / 1e6:.2f}M"),
    ("size_bytes", "size", lambda v: f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 1024:.1f} KiB"),
    ("latency_ms", "latency p50", lambda v: f"{v:.3f} ms"),
    ("seconds", "time", lambda v: f"{v:.1f}s"),
)


def _value(row: dict[str, Any], key: str) -> Any:
    """``row[key]``; a dotted key reads a nested dict (``quality_heldout.everyday``)."""
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@dataclass
class Report:
    run_dir: str
    metric: str
    rows: list[dict[str, Any]]
    status: str = "ok"
    error: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The last row that measured the model (the export row carries parity, not a new model)."""
        return self.rows[-1]

    def table(self, markdown: bool = False) -> str:
        columns = self._columns()
        header = [title for _, title, _ in columns]
        body = [[(fmt(value) if (value := _value(row, key)) is not None else "n/a") for key, _, fmt in columns]
                for row in self.rows]
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
        widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
        fmt_row = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                         for i, (c, w) in enumerate(zip(cells, widths)))
        return "\n".join([fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in body])

    def _columns(self) -> list[tuple[str, str, Callable[[Any], str]]]:
        """The fixed columns, with the quality on each further held-out set after ``quality``."""
        heldout = [name for name in self.rows[0].get("quality_heldout", {})] if self.rows else []
        extra = [(f"quality_heldout.{name}", f"quality ({name})", _COLUMNS[1][2]) for name in heldout]
        return [_COLUMNS[0], _COLUMNS[1], *extra, *_COLUMNS[2:]]

    def markdown(self) -> str:
        lines = [f"# compressor run report", "", f"- run directory: `{self.run_dir}`",
                 f"- quality metric: **{self.metric}**", f"- status: **{self.status}**"]
        if self.error:
            lines.append(f"- error: {self.error}")
        lines += [f"- note: {n}" for n in self.notes]
        lines += ["", self.table(markdown=True), ""]
        if self.warnings:
            lines += ["## Warnings", ""] + [f"- {w}" for w in self.warnings] + [""]
        if self.artifacts:
            lines += ["## Artifacts", ""] + [f"- {k}: `{v}`" for k, v in self.artifacts.items()] + [""]
        extras = [(r["stage"], k, v) for r in self.rows for k, v in r.items()
                  if k in ("parity", "quality_per_epoch", "details", "placement")]
        if extras:
            lines += ["## Stage details", ""] + [f"- {s} {k}: `{v}`" for s, k, v in extras] + [""]
        if (Path(self.run_dir) / "report.png").exists():
            lines += ["![per-stage metrics](report.png)", ""]
        return "\n".join(lines)

    def write(self, plot: bool = True) -> None:
        run_dir = Path(self.run_dir)
        if plot:
            self.plot(run_dir / "report.png")
        write_json(run_dir / "report.json", asdict(self))
        write_text(run_dir / "report.md", self.markdown())

    def plot(self, path: Path) -> None:
        """Quality, size and latency per stage, relative to the input model."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows
        names = [r["stage"] for r in rows]
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        series = (("quality", self.metric), ("size_bytes", "size (KiB)"), ("latency_ms", "latency p50 (ms)"))
        for ax, (key, title) in zip(axes, series):
            values = [r.get(key) for r in rows]
            values = [(v / 1024 if key == "size_bytes" else v) if v is not None else 0 for v in values]
            ax.bar(range(len(names)), values, color="#4C72B0")
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            ax.set_title(title)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
