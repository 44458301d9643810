"""Distances on the Earth and a spatial index of points, for "what is near me" questions.

The index is scipy's cKDTree (a well-kept compiled k-d tree) over points as 3-D unit vectors:
the straight-line (chord) distance between two unit vectors grows with the great-circle
distance between the points, so a ball query of chord radius 2·sin(d / 2R) returns exactly
the points within d along the surface, with no trouble at the antimeridian or the poles. The
few it returns are then measured by haversine and sorted."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# numpy and SciPy are imported when an index is first built or queried, not with this module:
# SciPy's import takes most of a second, and every process that only measures a distance
# (governance's duplicate reports) would pay it at each start.

EARTH_RADIUS_METRES = 6_371_008.8  # the mean radius (IUGG)


def distance_metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance: exact enough at a few hundred metres, and no map data."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_METRES * math.asin(min(1.0, math.sqrt(a)))


def haversine_metres(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """distance_metres from one point to many, vectorised."""
    import numpy as np
    p1, p2 = math.radians(lat), np.radians(lats)
    dp, dl = p2 - p1, np.radians(lons - lon)
    a = np.sin(dp / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_METRES * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def unit_vectors(lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    import numpy as np
    phi, lam = np.radians(lats), np.radians(lons)
    return np.column_stack((np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)))


def chord_for(metres: float) -> float:
    """The chord of a unit sphere that spans `metres` along the Earth's surface."""
    return 2 * math.sin(min(metres / EARTH_RADIUS_METRES, math.pi) / 2)


class PointIndex:
    """An immutable index of keyed points (WGS-84 degrees). Never changed once built, so any
    number of threads may query it while a newer one is being built."""

    def __init__(self, points: Iterable[tuple[str, float, float]]):
        import numpy as np
        from scipy.spatial import cKDTree
        rows = sorted(points)  # by key: the same points always make the same index
        self.keys = [k for k, _, _ in rows]
        self.latitudes = np.array([lat for _, lat, _ in rows], dtype=float)
        self.longitudes = np.array([lon for _, _, lon in rows], dtype=float)
        self._tree = cKDTree(unit_vectors(self.latitudes, self.longitudes)) if rows else None

    def __len__(self) -> int:
        return len(self.keys)

    def within(self, latitude: float, longitude: float, metres: float
               ) -> list[tuple[float, str]]:
        """(distance in metres, key) of every point within `metres`, nearest first (ties by
        key). A hair of slack on the chord keeps a point exactly on the edge; the haversine
        distance then decides."""
        if self._tree is None:
            return []
        import numpy as np
        centre = unit_vectors(np.array([latitude]), np.array([longitude]))[0]
        found = np.array(self._tree.query_ball_point(centre, chord_for(metres) * (1 + 1e-9)),
                         dtype=np.intp)
        if found.size == 0:
            return []
        distances = haversine_metres(latitude, longitude, self.latitudes[found],
                                     self.longitudes[found])
        keep = distances <= metres
        return sorted(zip(distances[keep].tolist(), (self.keys[i] for i in found[keep]),
                          strict=True))


class PointSet:
    """Keyed points that change now and then (a place added or moved) and are queried often.
    Changes only mark the index stale; the next query rebuilds it once, under a lock, and
    every query works on the immutable index it took, so concurrent RPC threads never see a
    half-built one."""

    def __init__(self) -> None:
        self._points: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._index: PointIndex | None = None  # built by the first query

    def put(self, key: str, latitude: float, longitude: float) -> None:
        with self._lock:
            if self._points.get(key) != (latitude, longitude):
                self._points[key] = (latitude, longitude)
                self._index = None

    def remove(self, key: str) -> None:
        with self._lock:
            if self._points.pop(key, None) is not None:
                self._index = None

    def index(self) -> PointIndex:
        with self._lock:
            if self._index is None:
                self._index = PointIndex((k, lat, lon) for k, (lat, lon) in self._points.items())
            return self._index
