"""Event MACs, signed checkpoints and who holds which key: pure, without stores."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import pytest

from shared.checkpoints import BadCheckpoint, CheckpointSigner, CheckpointVerifier, unverified
from shared.config import ConfigError, env_for, load_settings
from shared.integrity import EventMac, Hmac, event_mac_v1
from shared.tools.audit_cli import read_checkpoints

KEY = bytes(range(32))
AGGREGATE = uuid.UUID("4f1c2b8e-1d2a-4c3b-9e8f-0a1b2c3d4e5f")
TOPIC = "services.identity.domain.model:Rider.Verified"
CONTENT = (b'{"timestamp":{"_type_":"datetime","_data_":"2026-06-05T01:30:00+00:00"},'
           b'"originator_topic":"services.identity.domain.model:Rider","name":"\xe9\xaa\x91"}')


def v1_state(content: dict) -> bytes:
    """An event as stored before v2: the MAC over the sorted JSON, the last member."""
    mac = event_mac_v1(KEY, AGGREGATE, 3, TOPIC, content)
    return json.dumps({**content, "_mac": mac}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def test_a_v2_mac_covers_the_aggregate_version_topic_and_every_byte():
    mac = EventMac(KEY)
    state = mac.seal_state(AGGREGATE, 3, TOPIC, CONTENT)
    assert json.loads(state)["_mac"].startswith("2:")
    assert mac.check(AGGREGATE, 3, TOPIC, state)
    assert not mac.check(uuid.uuid4(), 3, TOPIC, state)
    assert not mac.check(AGGREGATE, 4, TOPIC, state)
    assert not mac.check(AGGREGATE, 3, TOPIC.replace("Verified", "Suspended"), state)
    for index in range(len(state)):
        changed = bytearray(state)
        changed[index] ^= 0x01
        assert not mac.check(AGGREGATE, 3, TOPIC, bytes(changed)), index
    assert not EventMac(bytes(32)).check(AGGREGATE, 3, TOPIC, state)


def test_events_stored_before_v2_still_verify_and_still_fail_when_altered():
    mac = EventMac(KEY)
    plain = {"timestamp": {"_type_": "datetime", "_data_": "2026-06-05T01:30:00+00:00"},
             "hours": "1.5", "note": "骑手\n\u2028"}
    assert mac.check(AGGREGATE, 3, TOPIC, v1_state(plain))
    # A float orjson writes differently from the standard library: the exact form decides.
    odd = {**plain, "weight": 1e16, "small": 1e-05}
    assert mac.check(AGGREGATE, 3, TOPIC, v1_state(odd))
    altered = v1_state(plain).replace(b"1.5", b"9.5")
    assert not mac.check(AGGREGATE, 3, TOPIC, altered)
    assert not mac.check(AGGREGATE, 3, TOPIC, b'{"no":"mac"}')
    assert not mac.check(AGGREGATE, 3, TOPIC, b"not json")


@pytest.mark.parametrize("key", [bytes(32), KEY, bytes(100)])
def test_the_precomputed_hmac_is_hmac_sha256(key):
    for message in (b"", b"x", b"y" * 1000):
        assert Hmac(key).digest(message) == hmac.new(key, message, hashlib.sha256).digest()


# ---------------------------------------------------------------------- checkpoints

# golang.org/x/mod/sumdb/note's own example (its note_test.go): a note signed here must be the
# note Go signs, byte for byte, so that witnesses' tools read Qiji's checkpoints.
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = (GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUg"
           "YN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def test_notes_are_signed_and_read_as_the_go_reference_implementation_does():
    seed = base64.b64decode(GO_SIGNER.split("+", 4)[4])[1:]  # type byte, then the seed
    signer = CheckpointSigner(seed, "PeterNeumann")
    assert signer.verifier_key == GO_VERIFIER
    assert signer.sign_text(GO_TEXT) == GO_NOTE
    assert CheckpointVerifier.parse(GO_VERIFIER).open(GO_NOTE) == GO_TEXT


def test_a_checkpoint_verifies_only_under_its_own_key_and_unaltered():
    signer = CheckpointSigner(bytes(range(32, 64)), "qiji.local/identity")
    checkpoint = signer.sign(12345, bytes(range(32)))
    assert checkpoint.note.startswith("qiji.local/identity\n12345\nAAECAwQF")
    verifier = CheckpointVerifier.parse(signer.verifier_key)
    assert verifier.verify(checkpoint.note) == checkpoint
    # A witness's cosignature after ours is ignored, as signed notes require.
    witness = CheckpointSigner(bytes(32), "witness.example/w1")
    cosigned = checkpoint.note + witness.sign_text(checkpoint.body).split("\n\n", 1)[1]
    assert (verifier.verify(cosigned).position, verifier.verify(cosigned).seal) == (
        12345, checkpoint.seal)
    with pytest.raises(BadCheckpoint, match="does not verify"):
        verifier.verify(checkpoint.note.replace("12345", "12346"))
    with pytest.raises(BadCheckpoint, match="not signed by"):
        verifier.verify(witness.sign(12345, bytes(range(32))).note)


@pytest.mark.parametrize("note", [
    "qiji.local/identity\n12\nAAAA\n",  # no signature
    "qiji.local/identity\n012\n" + base64.b64encode(bytes(32)).decode() + "\n\n— a AAAAAA==\n",
    "qiji.local/identity\n12\n" + base64.b64encode(bytes(31)).decode() + "\n\n— a AAAAAA==\n",
    "qiji.local/identity\n12\n\n— a AAAAAA==\n",
    "qiji.local/identity\n12\n" + base64.b64encode(bytes(32)).decode() + "\n\n— a !!\n",
])
def test_malformed_checkpoints_are_refused(note):
    with pytest.raises(BadCheckpoint):
        unverified(note)


def test_a_verifier_key_whose_id_does_not_match_is_refused():
    with pytest.raises(BadCheckpoint):
        CheckpointVerifier.parse(GO_VERIFIER.replace("c74f20a3", "c74f20a4"))


def test_a_witness_file_holds_checkpoints_as_the_feed_delivered_them(tmp_path: Path):
    note = CheckpointSigner(bytes(32), "qiji.local/badges").sign(7, bytes(32)).note
    lines = [json.dumps({"type": "qiji.badges.v1.LogCheckpointSigned",
                         "data": {"checkpoint": note, "position": 7}}),
             "", json.dumps({"checkpoint": note})]
    kept = tmp_path / "witness.jsonl"
    kept.write_text("\n".join(lines) + "\n")
    assert read_checkpoints(kept) == [note, note]
    kept.write_text(json.dumps({"type": "qiji.badges.v1.BadgeAwarded", "data": {}}) + "\n")
    with pytest.raises(ValueError, match="no signed checkpoint"):
        read_checkpoints(kept)


# ---------------------------------------------------------------------- who holds which key

ENV = {"QIJI_MASTER_KEY": "m", "QIJI_MASTER_KEY_FILE": "f", "QIJI_AUDIT_SIGNING_KEY": "a",
       "BADGES_SIGNING_KEY": "b", "QIJI_RSA_SIGNING_KEY": "r", "IDENTITY_MASTER_KEY": "i",
       "QIJI_SERVICE_TOKEN": "t", "QIJI_POSTGRES_PASSWORD": "p", "RELAY_AMQP_URI": "amqp://",
       "BADGES_RSA_SIGNING_KEY_FILE": "rf", "QIJI_PUBLIC_READER_TOKEN": "pr",
       "QIJI_LOG_FORMAT": "json"}
# The secrets each process uses, and so is given (S3 of the review of issues 19 and 24).
STORE = {"QIJI_POSTGRES_PASSWORD", "QIJI_SERVICE_TOKEN"}
KEYS = {"QIJI_MASTER_KEY", "QIJI_MASTER_KEY_FILE", "QIJI_AUDIT_SIGNING_KEY"}
GIVEN = {
    "identity": STORE | KEYS | {"IDENTITY_MASTER_KEY"},
    "training": STORE | KEYS,
    "badges": STORE | KEYS | {"BADGES_SIGNING_KEY", "QIJI_RSA_SIGNING_KEY",
                              "BADGES_RSA_SIGNING_KEY_FILE"},
    "platform": {"QIJI_SERVICE_TOKEN"},
    "relay": STORE | {"RELAY_AMQP_URI"},
    "credentials": {"QIJI_PUBLIC_READER_TOKEN"},
    # The figures check each event's MAC (the master key) and sign nothing.
    "statistics": STORE | {"QIJI_MASTER_KEY", "QIJI_MASTER_KEY_FILE"},
    # The console calls with each signed-in official's own token: it holds no secret at all.
    "console": set(),
}


@pytest.mark.parametrize("process", sorted(GIVEN))
def test_each_process_is_given_the_secrets_it_uses_and_no_other(process):
    given = env_for(process, ENV)
    assert set(given) - {"QIJI_LOG_FORMAT"} == GIVEN[process]
    assert given["QIJI_LOG_FORMAT"] == "json"  # settings that are not secrets reach everyone


def test_supervisord_blanks_the_secrets_of_every_program_that_must_not_hold_them(
        tmp_path: Path):
    """deploy/up's supervisord hands one environment to every program: the configuration
    blanks, by name, each secret a program must not hold."""
    import configparser

    from supervisor.datatypes import dict_of_key_value_pairs

    from shared.tools.ops import supervision
    from shared.tools.ops.stack import PROCESSES, Stack
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(supervision.config_text(Stack(run_dir=tmp_path), PROCESSES, ENV))
    for name in PROCESSES:
        given = dict_of_key_value_pairs(config[f"program:{name}"].get("environment", ""))
        assert set(given.values()) <= {""}, name  # names only: no secret in the file
        kept = set(ENV) - set(given)
        expected = GIVEN.get(name, STORE | KEYS)
        assert kept - {"QIJI_LOG_FORMAT"} == expected, name


def test_a_checkpoint_origin_with_spaces_does_not_start():
    assert load_settings("identity", {}).audit_origin == "qiji.local"
    with pytest.raises(ConfigError, match="AUDIT_ORIGIN"):
        load_settings("identity", {"QIJI_AUDIT_ORIGIN": "Changzhou city"})
