"""How output files and uploaded files are sent: never as a page of Ember's own origin.

A model chooses its output files and a tenant its uploads, so neither may run as the
dashboard, which shares this origin (and holds the admin's token): an `.html` or `.svg`
opened from a link would read it, and a `.js` file is a same-origin script that passes the
dashboard's `script-src 'self'`. So every file is sent with
- `Content-Security-Policy: sandbox`: opened directly it gets an opaque origin and no scripts;
- `X-Content-Type-Options: nosniff`: a browser uses it only as the type it is sent as;
- `Content-Disposition: attachment` unless it is media a browser only displays (raster
  images, audio, video, plain text, JSON), which stay inline so outputs still show in pages;
- active types (HTML, SVG, XML, scripts, CSS) sent as `application/octet-stream`, so not even
  a `<script src>` or a stylesheet link of the dashboard's could use one.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from starlette.responses import FileResponse

# Shown in place: nothing in them runs.
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "text/plain",
        "application/json",
    }
)
INLINE_PREFIXES = ("audio/", "video/")
_ACTIVE_WORDS = ("html", "xml", "svg", "javascript", "ecmascript", "css")
OCTET_STREAM = "application/octet-stream"
HEADERS = {"Content-Security-Policy": "sandbox", "X-Content-Type-Options": "nosniff"}


def _inline(media_type: str) -> bool:
    return media_type in INLINE_TYPES or media_type.startswith(INLINE_PREFIXES)


def _active(media_type: str) -> bool:
    return any(word in media_type for word in _ACTIVE_WORDS)


def served_file(path: Path, media_type: str | None = None, name: str | None = None) -> FileResponse:
    """`path` as a download that cannot act as a page, script or style of this origin."""
    declared = (media_type or mimetypes.guess_type(path.name)[0] or OCTET_STREAM).lower()
    declared = declared.split(";")[0].strip()
    inline = _inline(declared)
    return FileResponse(
        path,
        media_type=OCTET_STREAM if _active(declared) else declared,
        filename=name or path.name,
        content_disposition_type="inline" if inline else "attachment",
        headers=HEADERS,
    )
