"""Each service's application is made with its upstreams' feeds (shared/grpc/server.py MakeApp)
and makes from them what its requests read; the server factory runs those same objects in the
background. Nothing is set on an application after it is made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.badges.service import SPEC as BADGES
from services.governance.service import SPEC as GOVERNANCE
from services.identity.service import SPEC as IDENTITY
from services.merchants.service import SPEC as MERCHANTS
from services.training.service import SPEC as TRAINING
from shared.followers import Follower
from shared.grpc.server import ServiceSpec, build_server
from tests.conftest import badges_key_env, settings_for

# What each application reads its upstreams through while it serves a request.
READ_BY_REQUESTS = {
    "identity": ["records", "partners", "merchants_follower", "governance_follower"],
    "training": ["identity_follower", "directory"],
    "merchants": ["identity_follower", "directory", "space_map", "badge_classes"],
    "badges": ["identity_follower", "directory"],
    "governance": ["identity_follower", "directory"],
}
# The upstreams each service follows, once each.
FOLLOWS = {"identity": {"merchants", "governance"}, "training": {"identity"},
           "merchants": {"identity", "badges"},
           "badges": {"identity", "training", "governance"}, "governance": {"identity"}}


@pytest.mark.parametrize("spec", [IDENTITY, TRAINING, MERCHANTS, BADGES, GOVERNANCE],
                         ids=lambda s: s.name)
def test_the_background_runs_what_the_application_made_from_its_feeds(
        spec: ServiceSpec, tmp_path: Path) -> None:
    # Port 0: a free one, never a running service's.
    env = {"QIJI_DATA_DIR": str(tmp_path), "QIJI_SERVICE_TOKEN": "t", "QIJI_GRPC_PORT": "0",
           **badges_key_env()}
    running = build_server(spec, settings_for(spec.name, env))
    try:
        app: Any = running.app
        background = running.followers
        assert None not in background
        for attribute in READ_BY_REQUESTS[spec.name]:
            made = getattr(app, attribute)
            # The very object a request catches up through is the one kept close behind:
            # not a second reader of the same feed beside it.
            assert made is not None and any(made is f for f in background), attribute
        followed = [f.upstream for f in background if isinstance(f, Follower)]
        assert sorted(followed) == sorted(FOLLOWS[spec.name])
        assert len({f.upstream for f in background}) == len(background)
    finally:
        running.app.close()


def test_an_application_made_without_feeds_follows_nothing(tmp_path: Path) -> None:
    """A tool, or a test that wires by hand: nothing is read from a network it has not got."""
    app: Any = MERCHANTS.make_app(settings_for("merchants", {"QIJI_DATA_DIR": str(tmp_path)}),
                                  bytes(32))
    try:
        assert app.identity_follower is None and app.badge_classes is None
        assert app.directory is None and app.space_map is None
    finally:
        app.close()
