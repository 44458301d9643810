"""Which pictures a badge class may carry: PNG or SVG (the two formats Open Badges bakes),
small, and — for SVG, which a browser runs as a document — nothing that could act."""

from __future__ import annotations

import re

MAX_IMAGE_BYTES = 256 * 1024
PNG, SVG = "image/png", "image/svg+xml"
MEDIA_TYPES = (PNG, SVG)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What an SVG must not hold: scripts, event handlers, external or embedded documents, entity
# declarations (billion laughs) and javascript: links. The public face also serves SVG under a
# Content-Security-Policy that forbids scripts; this keeps such a file out of the log at all.
_SVG_FORBIDDEN = re.compile(
    r"<\s*script|<\s*foreignObject|<\s*iframe|<\s*embed|<\s*object|<!DOCTYPE|<!ENTITY"
    r"|javascript:|\son[a-z]+\s*=|\s(?:xlink:)?href\s*=\s*(?![\"']?\s*(?:#|data:image/))",
    re.IGNORECASE)


def image_problem(image: bytes, media_type: str) -> str:
    """What is wrong with an uploaded picture, or "" when it may be stored."""
    if media_type not in MEDIA_TYPES:
        return f"image_media_type must be one of {', '.join(MEDIA_TYPES)}"
    if not image:
        return "the image is empty"
    if len(image) > MAX_IMAGE_BYTES:
        return f"the image has {len(image)} bytes; at most {MAX_IMAGE_BYTES} are accepted"
    if media_type == PNG:
        return "" if image.startswith(_PNG_SIGNATURE) else "the image is not a PNG file"
    try:
        text = image.decode("utf-8")
    except UnicodeDecodeError:
        return "an SVG image must be UTF-8 text"
    if not re.search(r"<svg[\s>]", text):
        return "the image is not an SVG document (no <svg> element)"
    found = _SVG_FORBIDDEN.search(text)
    if found:
        return (f"the SVG holds {found.group(0).strip()!r}: scripts, event handlers, "
                "embedded documents, entity declarations and external links are refused")
    return ""
