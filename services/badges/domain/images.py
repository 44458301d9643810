"""Which pictures a badge class may carry: PNG or SVG (the two formats Open Badges bakes),
small, whole, and — for SVG, which a browser runs as a document — nothing that could act."""

from __future__ import annotations

import html
import re

from shared.baking import png_chunks

MAX_IMAGE_BYTES = 256 * 1024
PNG, SVG = "image/png", "image/svg+xml"
MEDIA_TYPES = (PNG, SVG)
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


# Reasons of the field violations a picture may get, for callers' programs to branch on.
IMAGE_MEDIA_TYPE_NOT_ALLOWED = "IMAGE_MEDIA_TYPE_NOT_ALLOWED"
IMAGE_REQUIRED = "IMAGE_REQUIRED"
IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
IMAGE_MALFORMED = "IMAGE_MALFORMED"
IMAGE_ACTIVE_CONTENT = "IMAGE_ACTIVE_CONTENT"


def image_problem(image: bytes, media_type: str) -> tuple[str, str] | None:
    """What is wrong with an uploaded picture, as (reason, description), or None when it may be
    stored. IMAGE_MEDIA_TYPE_NOT_ALLOWED is the media type's fault, the others the picture's."""
    if media_type not in MEDIA_TYPES:
        return (IMAGE_MEDIA_TYPE_NOT_ALLOWED,
                f"must be {' or '.join(MEDIA_TYPES)}, not \"{media_type[:40]}\"")
    if not image:
        return IMAGE_REQUIRED, "the image is empty"
    if len(image) > MAX_IMAGE_BYTES:
        return (IMAGE_TOO_LARGE,
                f"the image has {len(image)} bytes; at most {MAX_IMAGE_BYTES} are accepted")
    if media_type == PNG:
        # Read as baking reads it: a picture that cannot be baked is refused now, not when a
        # rider's credential is exported.
        try:
            chunks = png_chunks(image)
        except ValueError as error:
            return IMAGE_MALFORMED, f"the image is not a whole PNG file ({error})"
        if chunks[0][0] != b"IHDR":
            return IMAGE_MALFORMED, "the image is not a PNG file (no IHDR first)"
        return None
    try:
        text = image.decode("utf-8")
    except UnicodeDecodeError:
        return IMAGE_MALFORMED, "an SVG image must be UTF-8 text"
    if not re.search(r"<svg[\s>]", text):
        return IMAGE_MALFORMED, "the image is not an SVG document (no <svg> element)"
    found = _SVG_FORBIDDEN.search(text) or _SVG_FORBIDDEN.search(html.unescape(text))
    if found:
        return (IMAGE_ACTIVE_CONTENT,
                f"the SVG holds \"{found.group(0).strip()}\": scripts, event handlers, "
                "embedded documents, entity declarations, external links and animated links "
                "are refused")
    return None
