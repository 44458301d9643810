"""Baked badges (Open Badges 3.0 §5.3): a signed credential inside the badge's own picture,
PNG or SVG. badges bakes (services/badges/application.py); the public credentials face
(services/credentials) and `qiji credential` unbake whatever anyone shows them. A format, not
a rule of any service, so it sits in the kernel where all three can import it (a service
imports no other service: pyproject's import-linter contracts)."""

from __future__ import annotations

import re
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The longest credential (compact JWS) Qiji checks: a credential is a few KB.
MAX_CREDENTIAL_CHARS = 100_000


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


# OB 3.0 §5.3 (Baked Badge): the signed credential inside the badge's own picture.
BAKED_KEYWORD = b"openbadgecredential"
OB3_BAKING_NAMESPACE = "https://purl.imsglobal.org/ob/v3p0"


class NotBaked(ValueError):
    """The image holds no Open Badges credential (or is not a PNG / SVG at all)."""


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    try:
        return png_chunks(png)
    except ValueError as error:
        raise NotBaked(str(error)) from None


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (len(data).to_bytes(4, "big") + kind + data
            + zlib.crc32(kind + data).to_bytes(4, "big"))


def bake_png(png: bytes, jwt: str) -> bytes:
    """The PNG with one uncompressed iTXt chunk, keyword openbadgecredential, holding the
    compact JWS, just before IEND (an earlier credential chunk is replaced: §5.3.1 allows only
    one)."""
    itxt = BAKED_KEYWORD + b"\x00" + b"\x00\x00" + b"\x00" + b"\x00" + jwt.encode("ascii")
    out = [PNG_SIGNATURE]
    for kind, data in _png_chunks(png):
        if kind == b"iTXt" and data.split(b"\x00", 1)[0] == BAKED_KEYWORD:
            continue
        if kind == b"IEND":
            out.append(_chunk(b"iTXt", itxt))
        out.append(_chunk(kind, data))
    return b"".join(out)


def bake_svg(svg: bytes, jwt: str) -> bytes:
    """The SVG with the openbadges namespace on its <svg> element and, right after it, an
    <openbadges:credential verify="<compact JWS>"/> (§5.3.2)."""
    text = svg.decode("utf-8")
    kept, at = [], 0
    while (found := _svg_credential(text, at)) is not None:
        kept.append(text[at:found[0]])
        at = found[1]
    text = "".join(kept) + text[at:]
    opening = re.search(r"<svg\b", text)
    close = text.find(">", opening.end()) if opening is not None else -1
    if opening is None or close < 0:
        raise NotBaked("not an SVG document")
    tag = original = text[opening.start():close + 1]
    if "xmlns:openbadges" not in tag:
        tag = tag[:-1].rstrip("/").rstrip() + f' xmlns:openbadges="{OB3_BAKING_NAMESPACE}">'
        if original.endswith("/>"):
            tag += "</svg>"
    baked = f'{tag}<openbadges:credential verify="{jwt}"/>'
    return (text[:opening.start()] + baked + text[close + 1:]).encode("utf-8")


def unbake(image: bytes) -> str:
    """The credential baked into a PNG or SVG: the compact JWS (or, from other issuers, the
    JSON text) as found (§5.3.1 / §5.3.2 "Extracting"). Linear in the image's size: the
    public face runs it on whatever anyone posts."""
    if image.startswith(PNG_SIGNATURE):
        for kind, data in _png_chunks(image):
            if kind == b"iTXt" and data.split(b"\x00", 1)[0] == BAKED_KEYWORD:
                rest = data[len(BAKED_KEYWORD) + 1:]
                if rest[:1] != b"\x00":
                    raise NotBaked("the credential chunk is compressed (§5.3.1 forbids it)")
                # compression flag, method, language tag \0, translated keyword \0, text
                text = rest[2:].split(b"\x00", 2)
                try:
                    return text[2].decode("utf-8").strip() if len(text) == 3 else ""
                except UnicodeDecodeError:
                    raise NotBaked("the credential chunk is not UTF-8 text") from None
        raise NotBaked("the PNG holds no openbadgecredential chunk")
    try:
        svg = image.decode("utf-8")
    except UnicodeDecodeError:
        raise NotBaked("neither a PNG nor an SVG file") from None
    found = _svg_credential(svg, 0)
    if found is None:
        raise NotBaked("the SVG holds no <openbadges:credential>")
    _start, _end, attributes, inner = found
    verify = re.search(r'\bverify\s*=\s*"([^"]*)"', attributes)
    if verify:
        return verify.group(1).strip()
    return inner.strip().removeprefix("<![CDATA[").removesuffix("]]>").strip()


_SVG_CREDENTIAL = "<openbadges:credential"
_SVG_CREDENTIAL_END = "</openbadges:credential>"


def _svg_credential(text: str, at: int) -> tuple[int, int, str, str] | None:
    """The first <openbadges:credential> element from `at`: (where it starts, where it ends,
    its attributes, its content). One pass of `str.find` each way, never a regular expression
    that starts again from every opening tag (a body of nothing but opening tags would take
    quadratic time)."""
    while True:
        start = text.find(_SVG_CREDENTIAL, at)
        if start < 0:
            return None
        after = start + len(_SVG_CREDENTIAL)
        if after < len(text) and (text[after].isspace() or text[after] in "/>"):
            break
        at = after  # <openbadges:credentials...>: another element
    close = text.find(">", after)
    if close < 0:
        return None
    if text[close - 1] == "/":
        return start, close + 1, text[after:close - 1], ""
    end = text.find(_SVG_CREDENTIAL_END, close + 1)
    if end < 0:
        return None
    return start, end + len(_SVG_CREDENTIAL_END), text[after:close], text[close + 1:end]
