"""Human-readable text for console replies.

Both front ends (the interactive console and ``python -m console``) print what
:func:`render` returns, so a reply looks the same wherever it is asked for.  A
command with no renderer of its own in :data:`RENDERERS` gets :func:`render_generic`,
which lays out any JSON-like reply readably: ``key: value`` lines, lists of scalars
joined by commas, lists of records as aligned tables, nested mappings indented.
Add a renderer here only when a command deserves more than that.

This module is pure string formatting and imports nothing heavy: the one-shot
client starts it on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from net.progress import human_bytes

Renderer = Callable[[Mapping[str, Any]], str]

INDENT = "  "
WRAP = 88  # columns for wrapped lists of names


# --- values -------------------------------------------------------------------------


def fmt_value(value: Any) -> str:
    """One scalar as a person wants to read it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        # Six significant digits: rates and fractions stay readable, no float noise.
        return f"{value:.6g}"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return ", ".join(fmt_value(v) for v in value) if value else "(none)"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def table(
    rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None, indent: str = ""
) -> list[str]:
    """Rows as left-aligned columns; numbers are right-aligned."""
    cells = [[fmt_value(c) for c in row] for row in rows]
    all_rows = ([list(header)] if header else []) + cells
    if not all_rows:
        return []
    ncols = max(len(r) for r in all_rows)
    widths = [max((len(r[i]) for r in all_rows if i < len(r)), default=0) for i in range(ncols)]
    numeric = [
        all(isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in rows)
        and bool(rows)
        for i in range(ncols)
    ]
    lines = []
    for r in all_rows:
        parts = []
        for i, cell in enumerate(r):
            parts.append(cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i]))
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def _record_table(records: Sequence[Mapping[str, Any]], indent: str) -> list[str]:
    """A list of mappings as a table whose columns are the union of their keys."""
    columns: list[str] = []
    for rec in records:
        for key in rec:
            if key not in columns:
                columns.append(key)
    rows = [[rec.get(c) for c in columns] for rec in records]
    return table(rows, [c.upper() for c in columns], indent)


def _generic_lines(data: Mapping[str, Any], indent: str = "") -> list[str]:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            if not value:
                lines.append(f"{indent}{key}: (none)")
            else:
                lines.append(f"{indent}{key}:")
                lines += _generic_lines(value, indent + INDENT)
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            lines.append(f"{indent}{key}:")
            lines += _record_table(value, indent + INDENT)
        elif isinstance(value, list | tuple) and not all(_is_scalar(v) for v in value):
            lines.append(f"{indent}{key}:")
            for v in value:
                if isinstance(v, Mapping):
                    lines += _generic_lines(v, indent + INDENT)
                else:
                    lines.append(f"{indent}{INDENT}{fmt_value(v)}")
        elif isinstance(value, str) and "\n" in value:
            lines.append(f"{indent}{key}:")
            lines += [f"{indent}{INDENT}{line}" for line in value.splitlines()]
        else:
            lines.append(f"{indent}{key}: {fmt_value(value)}")
    return lines


def render_generic(data: Mapping[str, Any]) -> str:
    """Any reply: ``ok`` for a bare acknowledgement, else its keys laid out readably."""
    if not data:
        return "ok"
    if set(data) == {"ok"}:
        return "ok" if data["ok"] else "failed"
    return "\n".join(_generic_lines(data))


# --- per-command renderers ------------------------------------------------------------


def render_ok(data: Mapping[str, Any]) -> str:
    if data.get("ok", True) and set(data) <= {"ok"}:
        return "ok"
    return render_generic(data)


def render_help(data: Mapping[str, Any]) -> str:
    return str(data.get("help", ""))


def render_list_mem(data: Mapping[str, Any]) -> str:
    me = data.get("self")
    leader = data.get("leader")
    members = data.get("members") or []
    lines: list[str] = []
    if members:
        rows = []
        for m in members:
            name = m.get("name")
            marks = ("*" if name == leader else " ") + (">" if name == me else " ")
            rows.append(
                [
                    marks,
                    name,
                    f"{m.get('host')}:{m.get('port')}",
                    m.get("status"),
                    m.get("incarnation"),
                ]
            )
        lines += table(rows, ["", "NAME", "ADDRESS", "STATUS", "INC"])
        lines.append(
            f"{len(members)} live member{'s' if len(members) != 1 else ''}  (* leader, > this node)"
        )
    else:
        lines.append("no live members known: this node is not in the cluster (use 'join')")
    lines.append(f"self: {fmt_value(me)}  leader: {fmt_value(leader)}")
    return "\n".join(lines)


def render_list_self(data: Mapping[str, Any]) -> str:
    text = (
        f"{fmt_value(data.get('name'))}  {data.get('host')}:{data.get('port')}"
        f"  incarnation {fmt_value(data.get('incarnation'))}"
    )
    member = data.get("member")
    if member is not None:
        text += "  member" if member else "  not a member (use 'join')"
    return text


def render_keys(data: Mapping[str, Any]) -> str:
    """``key: value`` lines with the values aligned."""
    if not data:
        return "ok"
    if not all(_is_scalar(v) for v in data.values()):
        return render_generic(data)
    width = max(len(k) for k in data) + 1
    return "\n".join(f"{k + ':':<{width}} {fmt_value(v)}" for k, v in data.items())


def _nodes(names: Any) -> str:
    return ", ".join(str(n) for n in names) if names else "-"


def render_put(data: Mapping[str, Any]) -> str:
    return f"{data['name']} version {data['version']} stored on {_nodes(data.get('replicas'))}"


def render_get(data: Mapping[str, Any]) -> str:
    return f"{data['name']} version {data['version']}: {fmt_value(data.get('bytes'))} bytes"


def render_ls(data: Mapping[str, Any]) -> str:
    versions = ", ".join(str(v) for v in data.get("versions", []))
    return f"{data['name']}\n  replicas: {_nodes(data.get('replicas'))}\n  versions: {versions}"


def render_files(data: Mapping[str, Any]) -> str:
    files = list(data.get("files", []))
    head = f"{data['node']} holds " if "node" in data else ""
    lines = [f"{head}{len(files)} file{'' if len(files) == 1 else 's'}"]
    lines += [f"  {f}" for f in files]
    return "\n".join(lines)


def render_versions(data: Mapping[str, Any]) -> str:
    versions = ", ".join(str(v) for v in data.get("versions", []))
    return f"{data['name']}: versions {versions or '-'} (newest first)"


def render_models(data: Mapping[str, Any]) -> str:
    """``models``: each kind's names wrapped under a heading, then any skipped plug-ins."""
    kinds: Mapping[str, Any] = data.get("kinds") or {"models": data["models"]}
    lines: list[str] = []
    for kind, names in kinds.items():
        lines.append(f"{kind} ({len(names)}):")
        row = INDENT
        for name in names:
            if len(row) + len(name) + 2 > WRAP and row.strip():
                lines.append(row.rstrip())
                row = INDENT
            row += f"{name}  "
        if row.strip():
            lines.append(row.rstrip())
    for entry, why in (data.get("skipped") or {}).items():
        lines.append(f"skipped plug-in {entry}: {why}")
    return "\n".join(lines) if lines else "no models"


def render_plot(data: Mapping[str, Any]) -> str:
    workers = data.get("workers", [])
    head = (
        f"{data['job_id']}: {fmt_value(data.get('queries'))} queries in "
        f"{fmt_value(data.get('batches'))} batches on {len(workers)} worker"
        f"{'' if len(workers) == 1 else 's'} ({_nodes(workers)})"
    )
    return "\n".join([head, *(f"  wrote {f}" for f in data["files"])])


RENDERERS: dict[str, Renderer] = {
    "put": render_put,
    "get": render_get,
    "delete": render_ok,
    "ls": render_ls,
    "ls-all": render_files,
    "store": render_files,
    "put-dir": render_files,
    "get-versions": render_versions,
    "join": render_ok,
    "leave": render_ok,
    "list_mem": render_list_mem,
    "list_self": render_list_self,
    "bps": render_keys,
    "fpr": render_keys,
    "help": render_help,
    "models": render_models,
    "plot": render_plot,
}


def render(command: str, data: Mapping[str, Any]) -> str:
    """The text the console prints for ``command``'s reply ``data`` (no trailing newline)."""
    renderer = RENDERERS.get(command, render_generic)
    try:
        return renderer(data)
    except (AttributeError, KeyError, TypeError, ValueError):
        # A reply shaped unlike what the renderer expects (an older or newer node):
        # show it plainly rather than fail.
        return render_generic(data)


def progress_line(done: int, total: int, label: str) -> str:
    """One line of progress for a long command (a copy, or files of a put-dir)."""
    pct = f" {100 * done / total:5.1f}%" if total else ""
    if label == "files" or label.startswith("files, "):  # a put-dir: files, then bytes
        return f"{done} of {total} files{pct}{label[len('files') :]}"
    return f"{label}: {human_bytes(done)} of {human_bytes(total)}{pct}"


def show_progress(stream: TextIO, done: int, total: int, label: str) -> None:
    """Progress on ``stream``: one updating line on a terminal, else only the end."""
    line = progress_line(done, total, label)
    try:
        if stream.isatty():
            stream.write(f"\r\033[K{line}" + ("\n" if done >= total else ""))
        elif done >= total:
            stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):  # the terminal went away
        pass
