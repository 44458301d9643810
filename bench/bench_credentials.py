"""The cost of Open Badges 3.0 credentials, beside the raw signature they are built around.

- A credential exported: the award as an OpenBadgeCredential (issuer, achievement, evidence,
  status entry, schema), the JWT claims mapped from it, JSON-encoded, base64url, signed — for
  RS256 and for Ed25519. Baseline: the same algorithm signing the same number of bytes alone.
- A status list served: an issuer's 131,072-entry Bitstring status list with 1,000 revoked
  awards, GZIP-compressed, wrapped as a credential and signed (what GetStatusList does on a
  miss of the public face's one-second cache). Baseline: gzip of the same 16 KiB bitstring
  alone.

In-process (no store, no network): these are the CPU figures a badges process spends per
call. Run: `.venv/bin/python -m bench.bench_credentials` (BENCH_ROUNDS, BENCH_OPS)."""

from __future__ import annotations

import gzip
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace

from bench.common import Figure, median_of, print_figures
from services.badges import credentials as ob3

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
OPS = int(os.environ.get("BENCH_OPS", "300"))
URLS = ob3.PublicUrls("https://badges.changzhou.example")


def _award() -> tuple[SimpleNamespace, SimpleNamespace]:
    now = datetime.now(UTC)
    badge = SimpleNamespace(id=uuid.uuid4(), name="金蜂骑士", description="志愿服务满 20 小时",
                            image_url="", image={"sha256": "x"}, issuer_id=str(uuid.uuid4()))
    award = SimpleNamespace(
        id=uuid.uuid4(), rider_id=str(uuid.uuid4()), awarded_at=now,
        expires_at=now + timedelta(days=365),
        evidence=[{"source": "badges", "reference": str(uuid.uuid4()),
                   "narrative": "8 h of volunteer service confirmed"} for _ in range(3)])
    return award, badge


def _per_second(work: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        work()
    return ops / (time.perf_counter() - started)


def main() -> list[Figure]:
    rsa_key = ob3.RsaKey.from_pem(ob3.new_rsa_pem(3072).encode())
    ed_key = ob3.Ed25519Key(os.urandom(32))
    award, badge = _award()
    figures = []
    for alg in ob3.SIGNING_ALGORITHMS:
        keys = ob3.IssuerKeys(rsa_key=rsa_key, ed25519_key=ed_key, alg=alg)

        def export(keys: ob3.IssuerKeys = keys) -> str:
            credential = ob3.open_badge(urls=URLS, award=award, badge_class=badge,
                                        criteria_narrative="20 小时经社区确认的志愿服务",
                                        issuer_name="常州市",
                                        status=ob3.StatusEntry(0, 4711))
            return ob3.sign(keys, URLS, credential, badge.issuer_id)

        size = len(export().rsplit(".", 1)[0])
        payload = os.urandom(size)
        qiji = median_of(ROUNDS, partial(_per_second, export, OPS))

        def sign_alone(keys: ob3.IssuerKeys = keys, payload: bytes = payload) -> bytes:
            return keys.active.sign(payload)

        raw = median_of(ROUNDS, partial(_per_second, sign_alone, OPS))
        figures.append(Figure(f"credential exported and signed, {alg}", qiji, raw,
                              baseline_name=f"{alg} signature alone"))

    revoked = random.Random(1).sample(range(ob3.STATUS_LIST_SIZE), 1000)
    keys = ob3.IssuerKeys(rsa_key=rsa_key, ed25519_key=ed_key)

    def status_list() -> str:
        credential = ob3.status_list_credential(
            urls=URLS, organisation_id=badge.issuer_id, list_number=0, revoked=revoked,
            valid_from=datetime.now(UTC))
        return ob3.sign(keys, URLS, credential, badge.issuer_id)

    bits = bytearray(ob3.STATUS_LIST_SIZE // 8)
    for index in revoked:
        bits[index // 8] |= 0x80 >> (index % 8)
    ops = max(10, OPS // 10)
    qiji_ms = median_of(ROUNDS, lambda: 1000 / _per_second(status_list, ops))
    raw_ms = median_of(ROUNDS, lambda: 1000 / _per_second(
        lambda: gzip.compress(bytes(bits), compresslevel=6, mtime=0), ops))
    figures.append(Figure("status list (131072 entries) built, signed", qiji_ms, raw_ms,
                          unit="ms", baseline_name="gzip of the bitstring alone"))
    print_figures("Open Badges credentials (in-process, CPU)", figures)
    return figures


if __name__ == "__main__":
    main()
