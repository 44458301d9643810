"""Baked badges (Open Badges 3.0 §5.3): the signed credential inside the badge's picture,
found again by any reader of the format, and the picture still a valid PNG / SVG."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
import zlib

import pytest

from shared.baking import NotBaked, bake_png, bake_svg, unbake

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpZCI6InVybjp1dWlkOjEifQ.c2lnbmF0dXJl"


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xf2\xb7\x05\xff" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk, each CRC checked, as a PNG decoder reads them."""
    found, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        at += 12 + length
    return found


def test_a_baked_png_holds_one_uncompressed_itxt_chunk_before_iend():
    baked = bake_png(bake_png(png(), "an.older.credential"), JWT)
    kinds = [kind for kind, _ in chunks(baked)]
    assert kinds == [b"IHDR", b"IDAT", b"iTXt", b"IEND"]  # rebaking replaced the first
    itxt = dict(chunks(baked))[b"iTXt"]
    assert itxt == b"openbadgecredential\x00\x00\x00\x00\x00" + JWT.encode()
    assert unbake(baked) == JWT


def test_a_baked_svg_is_still_svg_with_the_credential_right_after_the_svg_tag():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10"><circle r="4"/></svg>'
    baked = bake_svg(bake_svg(svg, "an.older.credential"), JWT)
    root = ET.fromstring(baked)
    first = next(iter(root))
    assert first.tag == "{https://purl.imsglobal.org/ob/v3p0}credential"
    assert first.get("verify") == JWT
    assert baked.count(b"openbadges:credential") == 1
    assert unbake(baked) == JWT


@pytest.mark.parametrize("image", [png(), b"<svg></svg>", b"\x00\x01", b"\x89PNG\r\n\x1a\n"])
def test_an_image_without_a_credential_says_so(image):
    with pytest.raises(NotBaked):
        unbake(image)


@pytest.mark.parametrize("svg", [
    f'<svg><openbadges:credential verify="{JWT}"/></svg>',
    f'<svg><openbadges:credential\n verify="{JWT}" ></openbadges:credential></svg>',
    f"<svg><openbadges:credential><![CDATA[{JWT}]]></openbadges:credential></svg>",
    f'<svg><openbadges:credentials verify="x"/><openbadges:credential>{JWT}'
    "</openbadges:credential></svg>",
])
def test_a_credential_is_found_in_each_form_an_svg_may_carry_it(svg):
    assert unbake(svg.encode()) == JWT


@pytest.mark.parametrize("image", [
    b"<svg>" + b"<openbadges:credential>" * 1000,  # opened, never closed
    b"<svg><openbadges:credential verify=",  # a tag never ended
    # A PNG whose credential chunk is not UTF-8 text.
    b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 26) + b"iTXt" + b"openbadgecredential\x00\x00\x00"
    b"\x00\x00\xff\xfe" + struct.pack(">I", zlib.crc32(
        b"iTXtopenbadgecredential\x00\x00\x00\x00\x00\xff\xfe"))
    + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")),
])
def test_a_broken_picture_is_not_baked_rather_than_an_error(image):
    with pytest.raises(NotBaked):
        unbake(image)


def test_baking_again_removes_every_earlier_credential_but_nothing_else():
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg"><openbadges:credential verify="a"/>'
           b"<circle r=\"4\"/><openbadges:credential>b</openbadges:credential></svg>")
    baked = bake_svg(svg, JWT)
    assert baked.count(b"openbadges:credential") == 1 and b'<circle r="4"/>' in baked
    assert unbake(baked) == JWT
