"""MkDocs hook: fail the build when the site would fetch anything from the network.

The site must work offline (an air-gapped machine, a file share): no web fonts, no CDN script, stylesheet or
image. Links a reader clicks (`<a href="https://...">`) are fine; assets are not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

# an asset URL: <script src>, <link href> (stylesheets, preconnects, icons), <img src>, <source>, <iframe>,
# CSS url(...) and @import
_HTML_ASSET = re.compile(
    r"<(?:script|img|source|iframe|embed|video|audio)\b[^>]*\bsrcs?=[\"']?(?:https?:)?//"
    r"|<link\b[^>]*\bhref=[\"']?(?:https?:)?//",
    re.IGNORECASE,
)
_CSS_ASSET = re.compile(r"url\(\s*[\"']?(?:https?:)?//|@import\s+[\"']?(?:url\()?[\"']?(?:https?:)?//", re.I)


def external_assets(site_dir: Path) -> list[str]:
    """`file: snippet` for every asset the built site would fetch from another host."""
    found = []
    for path in sorted(site_dir.rglob("*")):
        if path.suffix not in (".html", ".css"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = _HTML_ASSET if path.suffix == ".html" else _CSS_ASSET
        for match in pattern.finditer(text):
            found.append(f"{path.relative_to(site_dir)}: {text[match.start() : match.end() + 60]!r}")
    return found


def on_post_build(config: Any, **_: Any) -> None:
    found = external_assets(Path(config["site_dir"]))
    if found:
        raise PluginError("the site fetches assets from the network:\n" + "\n".join(found[:20]))
