"""Human-readable rendering of a report: summary, rules, the module tree with states, warnings."""

from __future__ import annotations

from layerfreeze.core.report import Report

STATE_MARK = {"trainable": "trainable", "frozen": "frozen", "partial": "partial", None: "-"}


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_count(n: int) -> str:
    for factor, suffix in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if n >= factor:
            return f"{n / factor:.1f}{suffix}"
    return str(n)


def render(report: Report, *, depth: int | None = None, tree: bool = True) -> str:
    s = report.summary
    lines = [f"{report.input.filename}: {report.format}, {human_bytes(report.input.bytes)}"
             + (f", sha256 {report.input.sha256[:16]}..." if report.input.sha256 else "")]
    if report.files is not None:
        shards = [f.path for f in report.files.files if f.role == "shard"]
        changed = [f.path for f in report.files.files if f.changed]
        named = f"{len(shards)} shards named by {report.files.index}" if report.files.index else "unsharded"
        lines.append(f"{len(report.files.files)} files, {named}"
                     + (f"; changed: {', '.join(changed)}" if report.output is not None else ""))
    if report.output is not None:
        lines.append(f"wrote {report.output.filename}: {human_bytes(report.output.bytes)}"
                     + (f", sha256 {report.output.sha256[:16]}..." if report.output.sha256 else ""))
    lines.append(
        f"parameters: {s.parameters} tensors, {human_count(s.numel_total)} elements, "
        f"{human_bytes(s.bytes_total)}"
    )
    lines.append(
        f"  trainable {s.trainable} ({human_count(s.numel_trainable)} elements, "
        f"{s.trainable_fraction:.1%}), frozen {s.frozen} ({human_count(s.numel_frozen)} elements)"
    )
    lines.append(f"buffers: {s.buffers} ({human_bytes(s.bytes_buffers)}), never trainable")
    if s.frozen:
        lines.append(f"training memory saved (estimate): {human_bytes(s.training_memory_saved_bytes)} "
                     "(no gradient and no AdamW moments for frozen parameters)")
    for rule in report.rules:
        lines.append(
            f"rule {rule.index} {rule.action} by {'+'.join(rule.selectors)}: selected {rule.selected} "
            f"({human_count(rule.selected_numel)} elements), decided {rule.decided}"
        )
    if tree:
        lines.append("")
        lines.extend(_tree(report, depth))
    for w in report.warnings:
        lines.append(f"warning [{w.code}]: {w.message}")
    return "\n".join(lines)


def _tree(report: Report, depth: int | None) -> list[str]:
    rows = []
    for m in report.modules:
        if depth is not None and m.depth > depth:
            continue
        label = "  " * m.depth + (m.path.rsplit(".", 1)[-1] if m.path else "(model)")
        kind = m.type.rsplit(".", 1)[-1] if m.type else ""
        rows.append((label, kind, human_count(m.numel), human_count(m.numel_trainable), STATE_MARK[m.state]))
    header = ("module", "type", "elements", "trainable", "state")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    fmt = "{:<%d}  {:<%d}  {:>%d}  {:>%d}  {}" % tuple(widths[:4])  # noqa: UP031
    out = [fmt.format(*header), *(fmt.format(*r) for r in rows)]
    hidden = sum(1 for m in report.modules if depth is not None and m.depth > depth)
    if hidden and depth is not None:
        out.append(f"... {hidden} deeper modules not shown: --depth {depth + 1} shows one more level, "
                   "--depth all shows every module")
    return out
