"""GCJ-02 ("Mars coordinates", what Amap, Tencent and Baidu's GCJ mode hand out in China) to and
from WGS-84: the published algorithm (Krasovsky 1940 ellipsoid and the offset polynomials as
in eviltransform and every port of it), in one place.

No PyPI package for it was well kept when this was written (eviltransform's last release is
from 2018, prcoords' and coord-convert's from 2019), so it lives here, with tests against the
point pairs eviltransform publishes. The forward direction is exact; the inverse has no closed
form and is solved by fixed-point iteration to under a millimetre."""

from __future__ import annotations

import math

_A = 6378245.0  # Krasovsky 1940 semi-major axis, metres
_EE = 0.00669342162296594323  # its first eccentricity squared
_TOLERANCE_DEGREES = 1e-9  # about 0.1 mm
_MAX_ITERATIONS = 30


def outside_china(latitude: float, longitude: float) -> bool:
    """Outside the box where GCJ-02 differs from WGS-84 (the published bounds)."""
    return not (72.004 <= longitude <= 137.8347 and 0.8293 <= latitude <= 55.8271)


def _latitude_offset(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) \
        * 2.0 / 3.0
    return ret


def _longitude_offset(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) \
        * 2.0 / 3.0
    return ret


def _offset(latitude: float, longitude: float) -> tuple[float, float]:
    d_lat = _latitude_offset(longitude - 105.0, latitude - 35.0)
    d_lon = _longitude_offset(longitude - 105.0, latitude - 35.0)
    rad = latitude / 180.0 * math.pi
    magic = 1 - _EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1 - _EE)) / (magic * sqrt_magic) * math.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * math.cos(rad) * math.pi)
    return d_lat, d_lon


def wgs84_to_gcj02(latitude: float, longitude: float) -> tuple[float, float]:
    if outside_china(latitude, longitude):
        return latitude, longitude
    d_lat, d_lon = _offset(latitude, longitude)
    return latitude + d_lat, longitude + d_lon


def gcj02_to_wgs84(latitude: float, longitude: float) -> tuple[float, float]:
    """The WGS-84 point whose GCJ-02 form is the one given: start from the point itself and
    move by the residual until the forward transform lands on it (the offset varies slowly,
    so this converges in a handful of steps)."""
    if outside_china(latitude, longitude):
        return latitude, longitude
    lat, lon = latitude, longitude
    for _ in range(_MAX_ITERATIONS):
        g_lat, g_lon = wgs84_to_gcj02(lat, lon)
        r_lat, r_lon = latitude - g_lat, longitude - g_lon
        lat, lon = lat + r_lat, lon + r_lon
        if abs(r_lat) < _TOLERANCE_DEGREES and abs(r_lon) < _TOLERANCE_DEGREES:
            break
    return lat, lon
