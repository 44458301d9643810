"""Which pictures a badge class may carry: PNG or SVG (the two formats Open Badges bakes),
small, whole, and — for SVG, which a browser runs as a document — nothing that could act."""

from __future__ import annotations

import html
import re

MAX_IMAGE_BYTES = 256 * 1024
PNG, SVG = "image/png", "image/svg+xml"
MEDIA_TYPES = (PNG, SVG)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What an SVG must not hold: scripts, event handlers, external or embedded documents, entity
# declarations (billion laughs), javascript: links, and animations that rewrite a link (an
# <animate attributeName="href" values="javascript:..."> turns a harmless link into one).
# Looked for in the text as written and with its character references decoded (&#106; is
# "j"). The public face also serves SVG under a Content-Security-Policy that forbids scripts;
# this keeps such a file out of the log at all.
_SVG_FORBIDDEN = re.compile(
    r"<\s*script|<\s*foreignObject|<\s*iframe|<\s*embed|<\s*object|<!DOCTYPE|<!ENTITY"
    r"|javascript:|\son[a-z]+\s*=|\s(?:xlink:)?href\s*=\s*(?![\"']?\s*(?:#|data:image/))"
    r"|\sattributeName\s*=\s*[\"']?\s*(?:xlink:)?href\b",
    re.IGNORECASE)


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG file up to IEND, as (kind, data); ValueError saying what is wrong
    when it is not a whole PNG file (no signature, cut short, no IEND)."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    chunks, at = [], len(PNG_SIGNATURE)
    while at + 8 <= len(png):
        length = int.from_bytes(png[at:at + 4], "big")
        kind = png[at + 4:at + 8]
        data = png[at + 8:at + 8 + length]
        if len(data) != length or at + 12 + length > len(png):
            raise ValueError("the PNG is cut short")
        chunks.append((kind, data))
        at += 12 + length
        if kind == b"IEND":
            return chunks
    raise ValueError("the PNG has no IEND chunk")


def image_problem(image: bytes, media_type: str) -> str:
    """What is wrong with an uploaded picture, or "" when it may be stored."""
    if media_type not in MEDIA_TYPES:
        return f"image_media_type must be one of {', '.join(MEDIA_TYPES)}"
    if not image:
        return "the image is empty"
    if len(image) > MAX_IMAGE_BYTES:
        return f"the image has {len(image)} bytes; at most {MAX_IMAGE_BYTES} are accepted"
    if media_type == PNG:
        # Read as baking reads it: a picture that cannot be baked is refused now, not when a
        # rider's credential is exported.
        try:
            chunks = png_chunks(image)
        except ValueError as error:
            return f"the image is not a whole PNG file ({error})"
        return "" if chunks[0][0] == b"IHDR" else "the image is not a PNG file (no IHDR first)"
    try:
        text = image.decode("utf-8")
    except UnicodeDecodeError:
        return "an SVG image must be UTF-8 text"
    if not re.search(r"<svg[\s>]", text):
        return "the image is not an SVG document (no <svg> element)"
    found = _SVG_FORBIDDEN.search(text) or _SVG_FORBIDDEN.search(html.unescape(text))
    if found:
        return (f"the SVG holds {found.group(0).strip()!r}: scripts, event handlers, "
                "embedded documents, entity declarations, external links and animated links "
                "are refused")
    return ""
