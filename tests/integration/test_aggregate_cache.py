"""The two reads of an aggregate (shared/store/cache.py): `view` for a query, the cached
aggregate itself; `get` for a command, a copy of its own (on SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest

from services.identity.application import IdentityApplication
from services.identity.domain.model import Rider
from shared.errors import InvalidArgument, NotFound
from tests.conftest import MASTER_KEY, actor, as_actor, settings_for
from tests.integration.test_replicas import registered_rider


def test_a_view_is_the_cached_aggregate_and_a_get_a_copy_of_its_own(store_env):
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        rider_id = registered_rider(app)
        shown = app.view(rider_id, Rider, "rider")
        assert app.view(rider_id, Rider, "rider") is shown  # no copy for a query
        mine = app.get(rider_id, Rider, "rider")
        assert mine is not shown and mine.version == shown.version
        mine.__dict__["status"] = "changed by a command that did not save"
        assert app.view(rider_id, Rider, "rider").status != mine.status  # the cache is intact
        assert app.get(rider_id, Rider, "rider") is not mine
    finally:
        app.close()


def test_reads_at_a_version(store_env):
    """An older version is rebuilt from the store; the current one is the cached one."""
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        rider_id = registered_rider(app)
        with as_actor(actor("platform-co", "platform")):
            app.verify_rider(rider_id=rider_id)
        current = app.view(rider_id, Rider, "rider")
        older = app.view(rider_id, Rider, "rider", current.version - 1)
        assert older.version == current.version - 1 and older is not current
        assert app.view(rider_id, Rider, "rider", current.version) is current
        copy = app.get(rider_id, Rider, "rider", current.version)
        assert copy is not current and copy.version == current.version
        assert app.get(rider_id, Rider, "rider", current.version - 1).version == older.version
    finally:
        app.close()


def test_unknown_and_malformed_ids(store_env):
    app = IdentityApplication(settings_for("identity", store_env), MASTER_KEY)
    try:
        unknown = uuid.uuid4()
        assert not app.exists(unknown)
        for read in (app.view, app.get):
            with pytest.raises(NotFound):
                read(str(unknown), Rider, "rider")
            with pytest.raises(InvalidArgument):
                read("not-an-id", Rider, "rider")
    finally:
        app.close()
