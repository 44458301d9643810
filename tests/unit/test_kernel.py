"""The common kernel: error table, paging tokens, configuration, sealing of personal data."""

import inspect

import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from shared import errors
from shared.config import ConfigError, load_settings
from shared.grpc.errors import to_status
from shared.paging import decode_token, encode_token, page
from shared.personal_data import ERASED, PersonalDataVault


def all_error_classes():
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, errors.QijiError) and c is not errors.QijiError]


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_domain_error_maps_to_a_precise_status(cls):
    error = (cls([errors.FieldViolation("f", "d")]) if cls is errors.InvalidArgument
             else cls("kind", "id") if cls is errors.NotFound else cls("message"))
    status = to_status(error, "identity.qiji")
    assert status.code.name not in ("UNKNOWN", "INTERNAL", "OK")
    assert "Traceback" not in status.details


def test_invalid_arguments_carry_field_violations_and_a_reason():
    status = to_status(errors.InvalidArgument([errors.FieldViolation("phone", "bad")]), "d")
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    parsed = status_pb2.Status.FromString(details)
    assert parsed.code == code_pb2.INVALID_ARGUMENT
    bad, info = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in parsed.details}
    assert kinds == {"google.rpc.BadRequest", "google.rpc.ErrorInfo"}
    for d in parsed.details:
        if d.Is(bad.DESCRIPTOR):
            d.Unpack(bad)
        else:
            d.Unpack(info)
    assert [(v.field, v.description) for v in bad.field_violations] == [("phone", "bad")]
    assert info.domain == "d"


def _resource_infos(status) -> list[tuple[str, str, str]]:
    details = dict(status.trailing_metadata)["grpc-status-details-bin"]
    found = []
    for d in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ResourceInfo()
        if d.Unpack(info):
            found.append((info.resource_type, info.resource_name, info.description))
    return found


def test_a_not_found_names_every_missing_reference_as_a_resource_info():
    """A request whose only faults are references to nothing (R4): NOT_FOUND of the first, and
    a google.rpc.ResourceInfo for each, so that the caller fixes them all in one go. The type
    is the contract's, from the field's resource_reference when the request is known."""
    from qiji.governance.v1 import governance_service_pb2 as gpb
    violations = errors.Violations()
    violations.missing("rules[0].street_id", "street", "s-1")
    violations.missing("rules[0].department_ids[1]", "department", "d-2")
    with pytest.raises(errors.NotFound) as caught:
        violations.raise_if_any()
    assert caught.value.reason == "STREET_NOT_FOUND"
    assert caught.value.metadata == {"kind": "street", "id": "s-1"}
    request = gpb.SetRoutingRulesRequest()
    status = to_status(caught.value, "governance.qiji", request)
    assert status.code.name == "NOT_FOUND"
    assert _resource_infos(status) == [
        ("qiji.city/Organisation", "s-1", "rules[0].street_id"),
        ("qiji.city/Organisation", "d-2", "rules[0].department_ids[1]")]
    assert "d-2" in status.details  # the message names them all too, for people


def test_every_not_found_carries_a_resource_info_for_its_resource():
    status = to_status(errors.NotFound("badge_class", "b-1"), "badges.qiji")
    assert _resource_infos(status) == [("qiji.city/BadgeClass", "b-1", "")]
    # A kind the contract has no resource type for is shown as itself.
    status = to_status(errors.NotFound("enrolment", "r-1", field="rider_id"), "training.qiji")
    assert _resource_infos(status) == [("enrolment", "r-1", "rider_id")]


def test_a_resource_type_is_the_one_the_requests_field_refers_to():
    """ApplyMerchant's merchant_id names the organisation the merchant is (the contract says
    so); everywhere else a merchant id names the merchants service's Merchant."""
    from qiji.merchants.v1 import merchants_service_pb2 as mpb
    missing = errors.NotFound("merchant", "m-1", field="merchant_id")
    assert _resource_infos(to_status(missing, "d", mpb.ApplyMerchantRequest())) == [
        ("qiji.city/Organisation", "m-1", "merchant_id")]
    assert _resource_infos(to_status(missing, "d", mpb.ApproveMerchantRequest())) == [
        ("qiji.city/Merchant", "m-1", "merchant_id")]
    nested = errors.NotFound("street", "s-1", field="location.street_id")
    from qiji.governance.v1 import governance_service_pb2 as gpb
    assert _resource_infos(to_status(nested, "d", gpb.SubmitReportRequest())) == [
        ("qiji.city/Organisation", "s-1", "location.street_id")]


def test_references_to_nothing_among_other_faults_carry_resource_infos_too():
    violations = errors.Violations()
    violations.add("name", "must not be empty", "FIELD_REQUIRED")
    violations.missing("parent_id", "organisation", "o-1")
    with pytest.raises(errors.InvalidArgument) as caught:
        violations.raise_if_any()
    assert _resource_infos(to_status(caught.value, "d")) == [
        ("qiji.city/Organisation", "o-1", "parent_id")]


def test_a_page_token_only_works_with_the_filters_it_was_made_for():
    token = encode_token(42, ["street=a"])
    assert decode_token(token, ["street=a"]) == 42
    with pytest.raises(errors.InvalidArgument):
        decode_token(token, ["street=b"])
    with pytest.raises(errors.InvalidArgument):
        decode_token("garbage!", ["street=a"])


def test_paging_walks_every_matching_row_once():
    keys = list(range(1, 101))
    seen, token = [], ""
    while True:
        rows, token = page(keys, lambda k: k if k % 3 == 0 else None, page_size=7,
                           page_token=token, filters=[])
        seen += rows
        if not token:
            break
    assert seen == [k for k in keys if k % 3 == 0]


@pytest.mark.parametrize("looks_at", [1, 2, 5, 13, 200])
def test_a_page_that_looks_at_few_keys_still_walks_every_matching_row_once(looks_at: int):
    keys = list(range(1, 101))
    looked: list[int] = []

    def row(key: int) -> int | None:
        looked.append(key)
        return key if key % 17 == 0 else None
    seen, token, pages = [], "", 0
    while True:
        before = len(looked)
        rows, token = page(keys, row, page_size=3, page_token=token, filters=[],
                           looks_at=looks_at)
        assert len(looked) - before <= looks_at  # each page's cost is bounded
        seen, pages = seen + rows, pages + 1
        if not token:
            break
    assert seen == [17, 34, 51, 68, 85]
    assert sorted(set(looked)) == keys  # every key looked at, none skipped
    assert pages >= 100 // looks_at


def test_a_page_size_above_the_maximum_is_coerced_to_it():
    # AIP-158 (issue 23): asking for more than a page holds gets a full page and a token.
    keys = list(range(1, 1202))
    rows, token = page(keys, lambda k: k, page_size=10_000, page_token="", filters=[])
    assert rows == keys[:500] and token
    rows, token = page(keys, lambda k: k, page_size=0, page_token="", filters=[])
    assert len(rows) == 50


def test_the_platform_feed_reads_page_sizes_as_every_list_does_with_its_own_bounds():
    """The gateway's feed pages are larger (100 by default, 1000 at most) but read by the one
    rule of shared/paging.py: coerced above the maximum, refused below zero."""
    from services.platform.application import check_page_size as feed_page_size
    assert [feed_page_size(n) for n in (0, 1, 1000, 1001, 10**9)] == [100, 1, 1000, 1000, 1000]
    with pytest.raises(errors.InvalidArgument) as caught:
        feed_page_size(-1)
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("page_size", "PAGE_SIZE_NEGATIVE")]


def test_a_negative_page_size_is_refused_with_its_reason():
    with pytest.raises(errors.InvalidArgument) as caught:
        page([1], lambda k: k, page_size=-1, page_token="", filters=[])
    assert caught.value.reason == "PAGE_SIZE_NEGATIVE"
    assert [v.field for v in caught.value.violations] == ["page_size"]


def test_every_fault_of_a_request_in_one_answer_missing_references_included():
    violations = errors.Violations()
    violations.add("name", "must not be empty", "FIELD_REQUIRED")
    violations.missing("parent_id", "organisation", "6d3c…")
    with pytest.raises(errors.InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("name", "FIELD_REQUIRED"), ("parent_id", "ORGANISATION_NOT_FOUND")]
    assert caught.value.reason == "INVALID_ARGUMENT"  # two reasons: the violations say which


def test_a_request_only_naming_nothing_is_not_found():
    violations = errors.Violations()
    violations.missing("parent_id", "organisation", "6d3c")
    with pytest.raises(errors.NotFound) as caught:
        violations.raise_if_any()
    assert caught.value.reason == "ORGANISATION_NOT_FOUND"


def test_one_fault_gives_its_reason_to_the_error_info_too():
    with pytest.raises(errors.InvalidArgument) as caught:
        errors.require_ids(rider_id="nope")
    assert caught.value.reason == "INVALID_ID"


def test_service_settings_win_over_qiji_settings():
    s = load_settings("identity", {"QIJI_GRPC_PORT": "1", "IDENTITY_GRPC_PORT": "2"})
    assert s.grpc_port == 2
    assert load_settings("training", {"QIJI_GRPC_PORT": "1"}).grpc_port == 1


def test_a_schema_name_that_is_not_a_plain_identifier_is_refused():
    with pytest.raises(ConfigError):
        load_settings("identity", {"IDENTITY_POSTGRES_SCHEMA": 'x"; drop table y; --'})


class MemoryKeys:
    def __init__(self):
        self.rows = {}

    def get(self, subject):
        return self.rows.get(subject)

    def put_if_absent(self, subject, wrapped):
        if subject in self.rows:
            return False
        self.rows[subject] = (wrapped, False)
        return True

    def erase(self, subject):
        self.rows[subject] = (None, True)


def test_sealed_data_opens_only_for_its_subject_and_not_after_erasure():
    vault = PersonalDataVault(MemoryKeys(), bytes(32))
    a = vault.seal("rider-a", "13800000000")
    b = vault.seal("rider-b", "13900000000")
    assert "13800000000" not in a
    assert vault.open("rider-a", a) == "13800000000"
    with pytest.raises(ValueError):
        vault.open("rider-b", a)
    vault.erase("rider-a")
    assert vault.open("rider-a", a) == ERASED
    assert vault.open("rider-b", b) == "13900000000"


def test_a_key_read_before_its_erasure_is_not_cached_after_it():
    """Crypto-shredding holds against the vault's key cache: a read that fetched a subject's
    key from the store just before an erasure committed must not put it in the cache after the
    erasure dropped it, or the destroyed key would go on opening the subject's data."""
    keys = MemoryKeys()
    writer = PersonalDataVault(keys, bytes(32))
    sealed = writer.seal("rider-a", "13800000000")
    vault = PersonalDataVault(keys, bytes(32))  # nothing cached yet: the next open reads
    real_get = keys.get

    def get_then_erase(subject):
        found = real_get(subject)  # the key, as it was before the erasure...
        keys.get = real_get
        vault.erase(subject)  # ...which commits before this read caches what it found
        return found

    keys.get = get_then_erase
    assert vault.open("rider-a", sealed) == "13800000000"  # begun before: may still open
    assert vault.open("rider-a", sealed) == ERASED
    assert vault.fingerprint_key("rider-a", create=False) is None


def test_opening_a_cached_subjects_fields_builds_no_cipher(monkeypatch):
    """The cached key comes with its cipher: the fields of a get open without an AESGCM built
    per field (most of what opening one cost)."""
    import shared.personal_data as personal_data
    vault = PersonalDataVault(MemoryKeys(), bytes(32))
    sealed = [vault.seal("rider-a", v) for v in ("Li Lei", "13800000000", "320400")]
    built = []
    real = personal_data.AESGCM

    def counting(key):
        built.append(key)
        return real(key)

    monkeypatch.setattr(personal_data, "AESGCM", counting)
    assert [vault.open("rider-a", s) for s in sealed] == ["Li Lei", "13800000000", "320400"]
    assert built == []


def test_json_nested_deeper_than_the_parser_goes_is_bad_input_not_a_crash():
    """"[[[[..." raises RecursionError in Python's JSON parser, not ValueError: a page token
    or a credential made of it is refused as any other malformed one."""
    import base64

    from services.badges.credentials import Malformed, parse_jws
    from shared.errors import InvalidArgument
    deep = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    with pytest.raises(InvalidArgument):
        decode_token(deep, [])
    with pytest.raises(Malformed):
        parse_jws(f"{deep}.{deep}.AA")


def test_a_check_that_raises_joins_the_requests_other_violations():
    from shared.errors import InvalidArgument, Violations
    from shared.paging import decode_token

    violations = Violations()
    violations.add("phone", "bad", "PHONE_INVALID")
    assert violations.collect(lambda: decode_token("garbage!", [])) is None
    assert violations.collect(lambda: decode_token("", [])) == 0
    assert violations.about("page_token") and not violations.about("name")
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("phone", "PHONE_INVALID"), ("page_token", "PAGE_TOKEN_INVALID")]
    assert caught.value.reason == "INVALID_ARGUMENT"


def test_an_unknown_enum_number_is_its_own_fault_not_unspecified():
    """0 is *_UNSPECIFIED, whose meaning is the field's (required, or "any"); a number the
    contract does not define is ENUM_VALUE_UNKNOWN on that field, naming the number, and it
    joins the request's other faults."""
    from qiji.identity.v1 import identity_service_pb2 as pb

    from services.identity.domain.values import OrganisationKind
    from shared.errors import Violations
    from shared.grpc.convert import enum_in

    violations = Violations()
    assert enum_in(pb.ORGANISATION_KIND_STREET, pb.OrganisationKind, OrganisationKind,
                   violations, "kind") is OrganisationKind.STREET
    assert enum_in(0, pb.OrganisationKind, OrganisationKind, violations, "kind") is None
    assert not violations  # UNSPECIFIED is the field's to judge
    assert enum_in(42, pb.OrganisationKind, OrganisationKind, violations,
                   "rules[3].kind") is None
    [fault] = violations.items
    assert (fault.field, fault.reason) == ("rules[3].kind", "ENUM_VALUE_UNKNOWN")
    assert fault.description.startswith("42 is not a OrganisationKind")
    assert "ORGANISATION_KIND_STREET" in fault.description
    assert "ORGANISATION_KIND_UNSPECIFIED" not in fault.description
    assert violations.about("rules[3].kind")  # a required-check then says nothing more


def test_an_unreadable_timestamp_joins_the_requests_other_faults_at_its_path():
    from google.protobuf.timestamp_pb2 import Timestamp
    from qiji.governance.v1 import governance_service_pb2 as pb

    from shared.errors import InvalidArgument, Violations
    from shared.grpc.convert import optional_time

    violations = Violations()
    violations.add("case_id", "is required", "FIELD_REQUIRED")
    request = pb.RecordMediationSessionRequest(
        session=pb.MediationSession(hold_time=Timestamp(seconds=10**12)))
    # Nothing raised here, before the command has looked at the rest.
    assert optional_time(request.session, "hold_time", violations,
                         path="session.hold_time") is None
    assert optional_time(pb.RecordMediationSessionRequest().session, "hold_time",
                         violations) is None  # not set: no fault of its own
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("case_id", "FIELD_REQUIRED"), ("session.hold_time", "TIME_INVALID")]


def test_a_lists_page_faults_come_with_what_the_entry_point_found():
    from shared.errors import InvalidArgument, Violations
    from shared.paging import listed

    def run():
        return page(list(range(1, 4)), lambda k: k, page_size=-1, page_token="garbage!",
                    filters=[])

    assert listed(None, lambda: ([1], "")) == ([1], "")
    assert listed(Violations(), lambda: ([1], "")) == ([1], "")
    violations = Violations()
    violations.add("status", "42 is not a RiderStatus", "ENUM_VALUE_UNKNOWN")
    with pytest.raises(InvalidArgument) as caught:
        listed(violations, run)
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        ("status", "ENUM_VALUE_UNKNOWN"), ("page_size", "PAGE_SIZE_NEGATIVE"),
        ("page_token", "PAGE_TOKEN_INVALID")]
    # A well-formed page with a fault beside it lists nothing: the fault is the answer.
    quiet = Violations()
    quiet.add("status", "42 is not a RiderStatus", "ENUM_VALUE_UNKNOWN")
    with pytest.raises(InvalidArgument) as alone:
        listed(quiet, lambda: ([1], ""))
    assert [v.field for v in alone.value.violations] == ["status"]


def test_page_tokens_given_out_before_the_one_codec_still_read_the_same():
    """Every list's token, a table's and statistics' (which also carries its moment and is
    bound to the viewer), is written and read by shared/paging.py's one codec. Tokens given out
    before it, by main's code (the strings below), read as they did; one of other filters or
    viewer, or malformed, is INVALID_ARGUMENT on page_token, never INTERNAL."""
    from services.statistics.application import _decode_token
    from shared.errors import InvalidArgument
    from shared.paging import decode_token, encode_token

    filters = ["department_id=x", "status=OPEN"]
    table_token = "eyJhIjogNDEsICJmIjogIjE3YjVhMGZjMThlZTNjNDAifQ"
    assert encode_token(41, filters) == table_token
    assert decode_token(table_token, filters) == 41
    figures_token = ("eyJvIjogNCwgInQiOiAxNzgwMDAwMDAwMDAwMDAwLCAiZiI6ICJhYmNkZWYwMTIzNDU2Nzg5"
                     "In0")
    offset, moment = _decode_token(figures_token, "abcdef0123456789")
    assert offset == 4 and moment is not None
    assert int(moment.timestamp() * 1_000_000) == 1_780_000_000_000_000
    for token, read in ((table_token, lambda t: decode_token(t, ["status=CLOSED"])),
                        (figures_token, lambda t: _decode_token(t, "another viewer!!"))):
        with pytest.raises(InvalidArgument) as caught:
            read(token)
        assert [(v.field, v.reason) for v in caught.value.violations] == [
            ("page_token", "PAGE_TOKEN_FILTERS_CHANGED")]
    for garbage in ("garbage!", table_token[:-3], "W10", "eyJvIjogLTF9"):
        for read in (lambda t: decode_token(t, filters),
                     lambda t: _decode_token(t, "abcdef0123456789")):
            with pytest.raises(InvalidArgument) as caught:
                read(garbage)
            assert [(v.field, v.reason) for v in caught.value.violations] == [
                ("page_token", "PAGE_TOKEN_INVALID")]


def test_a_correlation_id_made_for_a_call_is_a_random_uuid4_in_its_text_form() -> None:
    # The guard formats it from 16 random bytes itself (shared/context.py): each one must be
    # what str(uuid.uuid4()) would give — version 4, RFC 4122 variant, canonical text.
    import uuid as uuid_module

    from shared.context import new_correlation_id
    made = [new_correlation_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid_module.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid_module.RFC_4122, text)
    assert {text[19] for text in made} == set("89ab")  # the variant's two bits, the rest random
