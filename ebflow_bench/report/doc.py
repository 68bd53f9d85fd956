"""A tiny document model rendered three ways: to Markdown (figures linked as files, each with its PDF), to one
self-contained HTML page (figures inlined as base64 PNG ``data:`` URIs, styles inline, no external
``src``/``href``), and each table to a LaTeX ``booktabs`` tabular (:func:`table_latex`).

Inline markup understood in text and table cells: ``**bold**`` and ```code```; everything else is escaped.
A :class:`Table` with a ``latex`` path (relative to report.md) is followed by a link to that file in Markdown and
by its name in HTML.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    #: a short name for the LaTeX file (``tables/<name>.tex``); the report fills ``latex`` when it writes it
    name: str = ""
    latex: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


Block = Heading | Para | Bullets | Code | Table | Figure

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _inline_html(text: str) -> str:
    out = html.escape(str(text), quote=False)
    out = _CODE.sub(lambda m: f"<code>{m.group(1)}</code>", out)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", out)


def to_markdown(title: str, blocks: list[Block], base: Path) -> str:
    """Markdown; figure paths are written relative to ``base`` (the folder of report.md)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {' '.join(str(i).split())}" for i in b.items] + [""]
        elif isinstance(b, Code):
            out += ["```", b.text, "```", ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(md_cell(h) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in b.rows]
            out.append("")
            if b.latex:
                out += [f"LaTeX: [{b.latex}]({b.latex})", ""]
        elif isinstance(b, Figure):
            rel = b.path.relative_to(base).as_posix()
            pdf = b.path.with_suffix(".pdf")
            link = f" ([PDF]({pdf.relative_to(base).as_posix()}))" if pdf.is_file() else ""
            out += [f"![{md_cell(b.caption)}]({rel})", "", f"*{b.caption}*{link}", ""]
        else:
            raise TypeError(f"unknown block {b!r}")
    return "\n".join(out)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}figure{margin:1em 0}img{max-width:100%}
figcaption{font-style:italic;font-size:0.9em}"""


def to_html(title: str, blocks: list[Block]) -> str:
    """One self-contained HTML page: every figure is read and embedded as a base64 PNG."""
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
           f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in b.rows)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            if b.latex:
                out.append(f"<p class='latex'>LaTeX: <code>{html.escape(b.latex)}</code></p>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            cap = _inline_html(b.caption)
            out.append(f"<figure><img alt='{html.escape(b.caption, quote=True)}' "
                       f"src='data:image/png;base64,{data}'><figcaption>{cap}</figcaption></figure>")
        else:
            raise TypeError(f"unknown block {b!r}")
    out.append("</body></html>")
    return "\n".join(out)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "²": r"$^2$",
                  "–": "--", "—": "---", "†": r"\textdagger{}"}


def latex_escape(text: str) -> str:
    """Plain text safe in LaTeX: the special characters escaped, a few Unicode symbols as math."""
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    for k, v in _LATEX_SYMBOLS.items():
        out = out.replace(k, v)
    return out


def _inline_latex(text: str) -> str:
    r"""A cell with ``**bold**`` and ```code``` as ``\textbf`` / ``\texttt``; the rest escaped."""
    parts, pos = [], 0
    pattern = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")
    text = " ".join(str(text).split())
    for m in pattern.finditer(text):
        parts.append(latex_escape(text[pos:m.start()]))
        if m.group(1) is not None:
            inner = _CODE.sub(lambda c: r"\texttt{" + latex_escape(c.group(1)) + "}", m.group(1))
            parts.append(r"\textbf{" + (inner if inner != m.group(1) else latex_escape(m.group(1))) + "}")
        else:
            parts.append(r"\texttt{" + latex_escape(m.group(2)) + "}")
        pos = m.end()
    parts.append(latex_escape(text[pos:]))
    return "".join(parts)


def table_latex(table: Table, caption: str = "") -> str:
    r"""The table as a LaTeX ``tabular`` with booktabs rules (``\toprule``, ``\midrule``, ``\bottomrule``;
    needs ``\usepackage{booktabs}``): first column left-aligned, the others right-aligned, every cell escaped."""
    ncol = len(table.header)
    lines = ["% generated by ebflow-bench report; needs \\usepackage{booktabs}"]
    if caption:
        lines.append("% " + " ".join(caption.split()))
    lines += [r"\begin{tabular}{l" + "r" * (ncol - 1) + "}", r"\toprule",
              " & ".join(_inline_latex(h) for h in table.header) + r" \\", r"\midrule"]
    for r in table.rows:
        cells = [_inline_latex(c) for c in r] + [""] * (ncol - len(r))
        lines.append(" & ".join(cells[:ncol]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "table"


def write_latex(blocks: list[Block], tex_dir: Path) -> None:
    """Write every table of ``blocks`` to ``tex_dir/NN-<name>.tex`` (booktabs) and point the table at it."""
    heads: dict[int, str] = {}
    n = 0
    for b in blocks:
        if isinstance(b, Heading):
            heads = {k: v for k, v in heads.items() if k < b.level}
            heads[b.level] = b.text
        elif isinstance(b, Table):
            n += 1
            where = " / ".join(heads[k] for k in sorted(heads))
            name = f"{n:02d}-{_slug(b.name or where)}.tex"
            (tex_dir / name).write_text(table_latex(b, caption=where))
            b.latex = f"{tex_dir.name}/{name}"
