"""Plain-text rendering of reports and job lists for the terminal."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._models import FileInfo, Job, Report

__all__ = ["render_jobs", "render_report"]


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _short(qualified: str | None) -> str:
    """``torch.nn.modules.conv.Conv2d`` -> ``Conv2d``: the table has no room for module paths."""
    return qualified.rpartition(".")[2] if qualified else "-"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    rows = [list(r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    align = set(right)

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        out = [c.rjust(w) if i in align else c.ljust(w) for i, (c, w) in pairs]
        return "  ".join(out).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _file(label: str, info: FileInfo) -> str:
    digest = f"  sha256 {info.sha256}" if info.sha256 else ""
    return f"{label}: {info.filename or '-'}  {_size(info.bytes)}{digest}"


def render_report(report: Report, *, parameters: bool = False, depth: int | None = None) -> str:
    """The report as a table of modules (down to ``depth``; None: all) or, with ``parameters``, of every
    parameter; then totals, rules and warnings."""
    lines = [f"format: {report.format or '-'}", _file("input", report.input)]
    if report.output is not None:
        lines.append(_file("output", report.output))
    lines.append("")
    if report.modules and not parameters:
        rows = []
        shown = [m for m in report.modules if depth is None or m.depth <= depth]
        for m in shown:
            name = m.name or "(root)"
            total, trainable = m.numel, m.numel_trainable
            label = "  " * m.depth + (name.rpartition(".")[2] if m.depth > 1 else name)
            rows.append([label, _short(m.type), m.state or "-", _n(m.parameters), _n(trainable), _n(total)])
        lines += table(["module", "type", "state", "params", "trainable elements", "elements"], rows,
                       right=(3, 4, 5))
        hidden = len(report.modules) - len(shown)
        if hidden and depth is not None:
            lines.append(f"... {hidden} deeper modules not shown: --depth {depth + 1} shows one more level, "
                         "--depth all shows every module, --params every parameter")
    else:
        rows = [[p.name, _short(p.module_type), "x".join(map(str, p.shape)) or "scalar", p.dtype,
                 _n(p.numel), "trainable" if p.requires_grad else "frozen",
                 "-" if p.rule is None else f"#{p.rule}"] for p in report.parameters]
        lines += table(["parameter", "type", "shape", "dtype", "elements", "state", "rule"], rows, right=(4,))
    s = report.summary
    lines += [
        "",
        f"parameters: {s.parameters:,}  trainable {s.trainable:,}  frozen {s.frozen:,}",
        f"elements:   {s.numel_total:,}  trainable {s.numel_trainable:,} ({s.trainable_fraction:.1%})  "
        f"frozen {s.numel_frozen:,}",
    ]
    lines.append(f"bytes:      {_size(s.bytes_total)}  trainable {_size(s.bytes_trainable)}  "
                 f"frozen {_size(s.bytes_frozen)}")
    lines.append(f"training memory saved: ~{_size(s.training_memory_saved_bytes)}")
    if s.training_memory_assumption:
        lines.append(f"  ({s.training_memory_assumption})")
    if report.rules:
        lines += ["", "rules:"]
        for r in report.rules:
            lines.append(f"  #{r.index} {r.action:8} selected {_n(r.selected)}  decided {_n(r.decided)}")
    if report.warnings:
        lines += ["", "warnings:"]
        lines += [f"  - {w.message}" + (f" [{w.code}]" if w.code else "") for w in report.warnings]
    return "\n".join(lines)


def render_jobs(jobs: Iterable[Job]) -> str:
    rows = [[j.id, j.status, j.created_at or "-", j.input.filename or "-", _size(j.input.bytes),
             "dry run" if j.dry_run else "freeze"] for j in jobs]
    if not rows:
        return "no jobs"
    return "\n".join(table(["id", "status", "created", "input", "size", "kind"], rows, right=(4,)))
