"""A self-contained HTML report: text, tables and PNG images embedded as base64 data URIs.

The building blocks return HTML strings; :func:`page` wraps them into one document with inline
CSS, so the file can be mailed or opened offline with nothing beside it. Only the ground-floor
file helpers are imported from the package.
"""

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jaxablate._files import atomic_write_text

__all__ = ["image", "page", "paragraph", "preformatted", "section", "table", "write"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } .subtitle { color: #666; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; border-radius: 4px; }
img { max-width: 100%; height: auto; display: block; margin: 0.8em 0; }
.note { color: #666; font-style: italic; }
"""


def _png_bytes(img: Any) -> bytes:
    if isinstance(img, bytes | bytearray):
        return bytes(img)
    if isinstance(img, str | os.PathLike):
        return Path(img).read_bytes()
    if hasattr(img, "savefig"):  # a matplotlib Figure
        buf = io.BytesIO()
        img.savefig(buf, format="png", dpi=110)
        return buf.getvalue()
    raise ValueError(
        f"image must be PNG bytes, a path to a PNG or a matplotlib Figure, got {img!r}"
    )


def image(img: Any, alt: str) -> str:
    """An ``<img>`` with the PNG inlined as a base64 data URI.

    Args:
        img: PNG bytes, a path to a PNG file, or a matplotlib Figure (rendered at 110 dpi).
        alt: The image's alternative text.

    Returns:
        The ``<img>`` element.

    Raises:
        ValueError: ``img`` is none of these, or its bytes are not a PNG.
    """
    data = _png_bytes(img)
    if not data.startswith(b"\x89PNG"):
        raise ValueError(f"image {alt!r} is not a PNG")
    b64 = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, float):
        return html.escape(format(value, fmt))
    return html.escape(str(value))


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    caption: str | None = None,
    float_format: str = "+.4f",
) -> str:
    """An HTML table; every cell is escaped.

    Args:
        headers: Column titles.
        rows: One sequence of ``len(headers)`` cells per row.
        caption: Optional caption above the table.
        float_format: Format spec of ``float`` cells (other cells are shown with ``str``).

    Returns:
        The ``<table>`` element.

    Raises:
        ValueError: A row has the wrong number of cells.
    """
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells, expected {len(headers)}: {row!r}")
        body.append("<tr>" + "".join(f"<td>{_cell(v, float_format)}</td>" for v in row) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def paragraph(text: str, *, note: bool = False) -> str:
    """A paragraph of escaped text (``note=True``: greyed, italic)."""
    cls = ' class="note"' if note else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def preformatted(text: str) -> str:
    """Monospaced, escaped text (e.g. the terminal summary)."""
    return f"<pre>{html.escape(text)}</pre>"


def section(title: str, *parts: str) -> str:
    """A titled section made of already-rendered parts."""
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def page(title: str, sections: Sequence[str], *, subtitle: str | None = None) -> str:
    """A complete HTML document with inline CSS."""
    sub = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{sub}{''.join(sections)}</body></html>\n"
    )


def write(path: str | os.PathLike, document: str) -> Path:
    """Write ``document`` to ``path`` (UTF-8), creating parent directories.

    The file is replaced atomically: a reader sees the old report or the new one, never half.

    Args:
        path: The HTML file.
        document: What :func:`page` returned.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, document)
    return p
