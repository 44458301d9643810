"""`qiji demo` tells the city's report against a running Qiji: on the embedded default started by
`qiji run` (twice against the same one: a rerun makes no second city), on the six services on
PostgreSQL started one by one as deploy/README.md does, and it stops with a clear message and a
non-zero exit when a step cannot happen."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from qiji.identity.v1 import identity_service_pb2 as ipb
from qiji.identity.v1 import identity_service_pb2_grpc as irpc

from shared.config import DEFAULT_PORTS
from shared.tools.demo import free_port_base
from tests.conftest import badges_key_env
from tests.e2e.conftest import (
    REPO,
    ServiceProcess,
    ToldQiji,
    clean_env,
    free_port,
    start_beside,
    start_service,
)

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT = 120
# What a reader of the story must see, in this order.
LANDMARKS = [
    "常州市 › 钟楼区 › 荷花池街道 › 北大街社区",
    "常州市外卖人才联合服务空间 opens in 荷花池街道",
    "operator: added caller qiji-demo-merchant-",
    "registers and verifies 4 riders of 荷花池站",
    "training certifies them for the job (岗前培训合格)",
    "carries qiji.training.v1.PreJobCertified for all 4",
    "友好商户 荷花池面馆 joins",
    "金蜂骑士 Golden Bee →",
    # 爱心公益活动: published by the community, signed up for in the platform's app, attended;
    # attendance confirms the hours (2 more each).
    "爱心公益活动: 北大街社区 publishes 社区助老送餐 (4 places, 2 h, at "
    "常州市外卖人才联合服务空间)",
    "the 4 riders sign up in 骑迹外卖's app (0 places left), attend, and their hours are "
    "confirmed by attendance — volunteer hours now: ",
    "claims 金蜂骑士专享：招牌面八折",
    # The ladder and the ceremony: a Green Bee grows into a Golden Bee, presented at the space.
    "grows from 青蜂骑士 into 金蜂骑士",
    "the Green Bee grown, not revoked; 荷花池街道 presents the Golden Bee at "
    "常州市外卖人才联合服务空间",
    "officials present: 荷花池街道党工委书记, 钟楼区委社会工作部部长",
    "feed carries qiji.badges.v1.BadgeGrown and AwardPresented",
    # 12345's standard: the city's working calendar and the clocks by category.
    "the city admin sets the working calendar (工作日历, version ",
    "09:00–12:00, 13:30–17:30, Monday to Friday, 元旦 2027-01-01 off; report clocks by "
    "category (acknowledge / answer): FIRE 15 min / 2 h around the clock; UTILITIES 2 h / 24 h "
    "around the clock; OTHER 4 h / 56 h of working time; DISPUTE 8 h / 120 h of working time",
    "突发事件直报:",
    "荷花池街道 verifies it (VERIFIED)",
    # The outcome goes back to the rider, who rates it.
    "feed tells", "the outcome (qiji.governance.v1.ReportVerified, with each department's "
    "resolution); the rider rates it in the app: SATISFIED (满意)",
    # 帮扶: legal aid, confidential to the street office; the outcome to the rider.
    "帮扶:", "asks for legal aid (法律援助) in 骑迹外卖's app; governance routes it to "
    "钟楼区法律援助中心", "荷花池街道 sees that it happened, not what was said: “[withheld: ",
    "钟楼区法律援助中心 names a caseworker, calls the rider and gives its outcome; 骑迹外卖's "
    "feed carries qiji.governance.v1.HelpOutcomeGiven to", "who rates it SATISFIED (满意)",
    # 接诉即办: the street's three rates.
    "荷花池街道 reads its three rates for the last day (接诉即办): response ",
    "satisfaction ",
    # A sponsor's care packages reach the riders who qualify; one of another street does not.
    "荷花池面馆 sponsors 关爱礼包: 2 packages of 矿泉水×6、藿香正气水×2、雨衣×1",
    "(2 of 2 allocated); 周骑手 of 西林街道 is refused: RIDER_NOT_OF_STREET (本街道骑手)",
    # The growth plan reaches the social-worker step first; then identity records the role.
    "荷花池街道 opens", "growth plan (量身定制) on the city's path 从骑手到社区社工",
    "steps reached 志愿者 → 社区社工 — 骑迹外卖's feed carries qiji.training.v1.GrowthStepReached",
    "becomes a full-time community social worker (社区社工) at 北大街社区",
    # The rider's map: the space (placed in GCJ-02, found in WGS-84) and the merchant with the
    # perks this rider may claim there.
    "asks 骑迹外卖's app where to charge nearby (FindNearby, 2 km, 充电): "
    "常州市外卖人才联合服务空间",
    "荷花池面馆",
    "may claim 金蜂骑士专享：招牌面八折",
    # Visits: the street office tallies today's amenity use at the space, counts only.
    "荷花池街道 records today's visits at 常州市外卖人才联合服务空间 — riders rested, charged "
    "and drank water (RecordSpaceUse, counts only: no one named)",
    # 友好社区: the community signs the co-building pledge and earns the mark, with evidence.
    "北大街社区 signs the co-building pledge (共建倡议, version 1; signed by 北大街社区)",
    "earns the friendly-community mark 「荷睦」友好社区 (AWARDED, criteria version 1): "
    "service spaces: 常州市外卖人才联合服务空间; friendly merchants: 荷花池面馆; "
    "co building pledge: co-building pledge version 1; street attestation: given",
    # The rider's own record, read by the platform in one call: every part of the story.
    "opens their own record (骑手档案) in 骑迹外卖's app — one call, five services: 2 courses "
    "passed",
    "10 volunteer hours confirmed; 1 care package handed over; reports: EMERGENCY VERIFIED by",
    # The month's figures as the social-work department reads them, the street office's own
    # part, and one export that holds the same figures.
    "as 钟楼区委社会工作部 reads them: 注册骑手 by street 荷花池街道 ",
    "荷花池街道's office sees its own street only: 注册骑手 ",
    "exports the month's 注册骑手 as ",
    "街道, 数值): the same figures as the answers",
    # The audit trail of the perk: its redemption with the quota after it, and the claim's
    # history with who acted; then why the rider holds the Golden Bee.
    "quota after: 49",
    "Claim.Issued(",
    "Claim.Redeemed(",
    "holds 金蜂骑士",
    "an automatic award",
    "passed a CIVIC_EDUCATION course",
    "The story is told: 36 steps",
]


def demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.tools.cli", "demo", *args], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=DEMO_TIMEOUT)


def assert_told(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    at = 0
    for landmark in LANDMARKS:
        found = result.stdout.find(landmark, at)
        assert found >= 0, f"{landmark!r} missing (or out of order) in:\n{result.stdout}"
        at = found


@dataclass
class Embedded:
    data_dir: Path
    port_base: int
    proc: subprocess.Popen[bytes]
    # The story as `qiji demo` told it on this Qiji while it was fresh.
    first: subprocess.CompletedProcess[str]

    @property
    def env(self) -> dict[str, str]:
        return clean_env(QIJI_DATA_DIR=str(self.data_dir))

    def cities(self) -> list[str]:
        token = (self.data_dir / "admin.token").read_text().strip()
        with grpc.insecure_channel(f"127.0.0.1:{self.port_base + 1}") as channel:
            reply = irpc.IdentityServiceStub(channel).ListOrganisations(
                ipb.ListOrganisationsRequest(kind=ipb.ORGANISATION_KIND_CITY),
                metadata=[("authorization", f"Bearer {token}")], timeout=10)
        return [o.name for o in reply.organisations]


@pytest.fixture(scope="module")
def embedded(told_qiji: ToldQiji) -> Embedded:
    """`qiji run --port-base N` on a data dir of its own: the embedded default (what `make
    demo` starts, too), on ports no other test and no developer's `make run` uses; the story
    was told on it once, fresh (the console's browser tests read the same Qiji)."""
    return Embedded(told_qiji.data_dir, told_qiji.port_base, told_qiji.proc, told_qiji.first)


def test_the_story_is_told_on_the_embedded_default_and_again_on_the_same_qiji(
        embedded: Embedded) -> None:
    first = embedded.first  # told when the Qiji was fresh, by `qiji demo --port-base N`
    assert_told(first)

    again = demo("--port-base", str(embedded.port_base), env=embedded.env)
    assert_told(again)
    # The second telling found the city of the first, and brought riders of its own.
    assert embedded.cities() == ["常州市"]
    assert "already there from an earlier run" in again.stdout
    riders = [line for line in again.stdout.splitlines() if "registers and verifies" in line]
    assert riders and riders[0] not in first.stdout


def test_a_service_that_does_not_answer_stops_the_demo_before_anything_is_written(
        embedded: Embedded) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    result = demo("--port-base", str(embedded.port_base), "--address",
                  f"governance={nowhere}", env=embedded.env)
    assert result.returncode == 1
    assert f"governance at {nowhere} answers UNAVAILABLE" in result.stderr
    assert "[01]" not in result.stdout


def test_a_refused_step_stops_the_demo_and_says_which(embedded: Embedded) -> None:
    result = demo("--port-base", str(embedded.port_base), "--token", "qiji_not-a-token",
                  env=embedded.env)
    assert result.returncode == 1
    assert ("FAILED at step 1: the city admin calling identity.ListOrganisations at "
            f"127.0.0.1:{embedded.port_base + 1}: UNAUTHENTICATED: unknown or revoked token"
            ) in result.stderr
    assert "Traceback" not in result.stderr


def qiji(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shared.tools.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_qiji_commands_find_the_running_qiji_and_its_token_from_any_directory(
        embedded: Embedded, tmp_path: Path) -> None:
    # Only the data folder is named: the ports come from the `qiji run` holding it, the token
    # from the folder, never from the directory the command is run in.
    verified = qiji("audit", "verify", env=embedded.env, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert [json.loads(line)["intact"] for line in verified.stdout.splitlines()] == [True] * 5
    # The same Qiji as a deploy/ run directory would describe it: stack.json and admin.token.
    run_dir = tmp_path / "qiji-run"
    run_dir.mkdir()
    (run_dir / "stack.json").write_text(json.dumps(
        {"port_offset": embedded.port_base + 1 - DEFAULT_PORTS["identity"]}))
    (run_dir / "admin.token").write_text((embedded.data_dir / "admin.token").read_text())
    verified = qiji("audit", "verify", "identity", "--run-dir", "qiji-run", env=clean_env(),
                    cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["service"] == "identity"


@pytest.mark.parametrize(("question", "says"), [
    (["perk", "{id}"], "qiji audit perk: NOT_FOUND: perk '{id}' not found"),
    (["history", "identity", "{id}"], "qiji audit history: NOT_FOUND: aggregate '{id}' not "
     "found"),
    (["award", "{id}", "{id}"], "qiji audit award: NOT_FOUND: rider '{id}' not found"),
])
def test_an_auditor_asking_about_something_that_does_not_exist_is_told_so(
        embedded: Embedded, tmp_path: Path, question: list[str], says: str) -> None:
    unknown = str(uuid.uuid4())
    asked = qiji("audit", *[w.format(id=unknown) for w in question], env=embedded.env,
                 cwd=tmp_path)
    assert (asked.returncode, asked.stdout, asked.stderr) == (1, "", says.format(id=unknown)
                                                             + "\n")


def test_a_second_qiji_run_on_the_same_data_folder_refuses_and_touches_nothing(
        embedded: Embedded) -> None:
    tokens = (embedded.data_dir / "tokens.json").read_bytes()
    second = qiji("run", "--port-base", str(free_port_base()), env=embedded.env, cwd=REPO)
    assert second.returncode == 2
    assert second.stderr.startswith(
        f"qiji run: another Qiji runs on the data folder {embedded.data_dir} (qiji run pid "
        f"{embedded.proc.pid}, identity at 127.0.0.1:{embedded.port_base + 1})")
    # The first one's callers (its services' own token among them) are as they were, and it
    # still answers.
    assert (embedded.data_dir / "tokens.json").read_bytes() == tokens
    assert embedded.cities() in ([], ["常州市"])


# ---------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def full_stack(postgres_db: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[dict[str, ServiceProcess]]:
    """The six services and the figures on PostgreSQL, one process each, wired to each
    other's feeds by address as deploy/README.md runs them: one master key, one tokens file,
    small pools."""
    tmp = tmp_path_factory.mktemp("demo-postgres")
    common = {"QIJI_POSTGRES_POOL_SIZE": "2"}
    (tmp / "identity").mkdir()
    identity = start_service("identity", postgres_db, tmp / "identity", extra_env=common)
    started = {"identity": identity}

    def beside(service: str, **env: str) -> ServiceProcess:
        (tmp / service).mkdir()
        started[service] = start_beside(service, identity, tmp / service, **common,
                                        QIJI_MASTER_KEY=identity.env["QIJI_MASTER_KEY"], **env)
        return started[service]
    try:
        training = beside("training")
        governance = beside("governance")
        badges = beside("badges", BADGES_TRAINING_ADDRESS=training.address,
                        BADGES_GOVERNANCE_ADDRESS=governance.address, **badges_key_env())
        merchants = beside("merchants", MERCHANTS_BADGES_ADDRESS=badges.address)
        upstreams = [("training", training), ("merchants", merchants), ("badges", badges),
                     ("governance", governance)]
        beside("platform", **{f"PLATFORM_{s.upper()}_ADDRESS": p.address for s, p in upstreams})
        beside("statistics",
               **{f"STATISTICS_{s.upper()}_ADDRESS": p.address for s, p in upstreams})
        # identity reads riders' records from the four: once they are up, it is told where
        # (as an operator deploying them one by one would, with a restart).
        identity.env.update({f"IDENTITY_{s.upper()}_ADDRESS": p.address for s, p in upstreams},
                            QIJI_SERVICE_TOKEN=identity.tokens["service"])
        identity.restart()
        yield started
    finally:
        for server in reversed(list(started.values())):
            if server.running:
                server.stop()


def test_the_story_is_told_on_the_services_on_postgresql(
        full_stack: dict[str, ServiceProcess]) -> None:
    identity = full_stack["identity"]
    addresses = [arg for name, server in full_stack.items()
                 for arg in ("--address", f"{name}={server.address}")]
    result = demo(*addresses, "--token", identity.tokens["city_admin"], "--tokens-file",
                  str(identity.tokens_file), env=clean_env())
    assert_told(result)


def test_a_reaction_that_does_not_come_stops_the_demo_and_says_which(
        full_stack: dict[str, ServiceProcess]) -> None:
    # badges no longer reaches training's feed: the civic course never counts toward the
    # Golden Bee, so that award never comes.
    badges, identity = full_stack["badges"], full_stack["identity"]
    training_address = badges.env["BADGES_TRAINING_ADDRESS"]
    badges.env["BADGES_TRAINING_ADDRESS"] = f"127.0.0.1:{free_port()}"
    badges.restart()
    try:
        addresses = [arg for name, server in full_stack.items()
                     for arg in ("--address", f"{name}={server.address}")]
        result = demo(*addresses, "--token", identity.tokens["city_admin"], "--tokens-file",
                      str(identity.tokens_file), "--timeout", "3", env=clean_env())
    finally:
        # The module's stack is whole again for whichever test comes next.
        badges.env["BADGES_TRAINING_ADDRESS"] = training_address
        badges.restart()
    assert result.returncode == 1
    assert "[11] 爱心公益: 北大街社区 confirms" in result.stdout
    assert "[12]" not in result.stdout
    assert "FAILED at step 12: badges awarding 金蜂骑士 to " in result.stderr
    assert "did not happen within 3 s" in result.stderr
