"""A tiny document model rendered twice: to Markdown (figures linked as files) and to one self-contained HTML
page (figures inlined as base64 PNG ``data:`` URIs, styles inline, no external ``src``/``href``).

Inline markup understood in text and table cells: ``**bold**`` and ```code```; everything else is escaped.
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
        elif isinstance(b, Figure):
            out += [f"![{md_cell(b.caption)}]({b.path.relative_to(base).as_posix()})", "", f"*{b.caption}*", ""]
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
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            cap = _inline_html(b.caption)
            out.append(f"<figure><img alt='{html.escape(b.caption, quote=True)}' "
                       f"src='data:image/png;base64,{data}'><figcaption>{cap}</figcaption></figure>")
        else:
            raise TypeError(f"unknown block {b!r}")
    out.append("</body></html>")
    return "\n".join(out)
