"""Formats of personal data: mobile numbers, resident identity numbers, and their masks."""

from hypothesis import given
from hypothesis import strategies as st

from services.identity.domain.model import Organisation, check_opening_hours, check_registration
from services.identity.domain.values import (
    DepartmentFunction,
    OrganisationKind,
    is_mobile_phone,
    is_national_id,
)
from shared.errors import Violations
from shared.masking import mask_national_id, mask_phone

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def with_check_character(body: str) -> str:
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, _W, strict=True)) % 11]


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_every_id_with_its_check_character_is_valid_and_any_other_is_not(body):
    good = with_check_character(body)
    assert is_national_id(good)
    for wrong in "0123456789X":
        if wrong != good[-1]:
            assert not is_national_id(body + wrong)


def test_a_lower_case_x_check_character_is_accepted():
    # 11010519491231002X is the standard's own example.
    assert is_national_id("11010519491231002x")


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_a_masked_phone_keeps_only_the_first_three_and_last_four_digits(phone):
    masked = mask_phone(phone)
    assert is_mobile_phone(phone)
    assert masked == phone[:3] + "****" + phone[-4:]


def test_numbers_that_are_not_mainland_mobiles_are_refused():
    for phone in ("12812345678", "1381234567", "138123456789", "+8613812345678", ""):
        assert not is_mobile_phone(phone)


def test_a_masked_national_id_hides_the_birth_date():
    assert mask_national_id("11010519491231002X") == "110***********002X"


def test_registration_reports_every_bad_field_at_once():
    v = Violations()
    check_registration(v, platform_rider_id="bad id!", name="", phone="123",
                       national_id="110105194912310021")
    assert {x.field for x in v.items} == {"platform_rider_id", "name", "phone", "national_id"}


def test_a_street_must_hang_under_a_district():
    v = Violations()
    Organisation.check(v, OrganisationKind.STREET, "荷花池街道", OrganisationKind.CITY, True, None)
    assert [x.field for x in v.items] == ["parent_id"]


def test_a_city_stands_alone_and_a_department_needs_a_function():
    v = Violations()
    Organisation.check(v, OrganisationKind.CITY, "常州市", None, False, None)
    assert v.items == []
    Organisation.check(v, OrganisationKind.DEPARTMENT, "公安", None, False, None)
    assert {x.field for x in v.items} == {"parent_id", "department_function"}
    v = Violations()
    Organisation.check(v, OrganisationKind.STREET, "x", None, False,
                       DepartmentFunction.PETITIONS)
    assert {x.field for x in v.items} == {"parent_id", "department_function"}


def test_opening_hours_must_be_real_times_in_order_once_per_day():
    v = Violations()
    check_opening_hours(v, [
        {"weekday": 1, "opens": "07:00", "closes": "21:00"},
        {"weekday": 1, "opens": "08:00", "closes": "09:00"},
        {"weekday": 8, "opens": "25:00", "closes": "07:00"},
        {"weekday": 2, "opens": "12:00", "closes": "11:00"},
    ])
    # Each fault with its reason (issue 23).
    assert [(x.field, x.reason) for x in v.items] == [
        ("opening_hours[1].weekday", "DUPLICATE_VALUE"),
        ("opening_hours[2].weekday", "VALUE_OUT_OF_RANGE"),
        ("opening_hours[2].opens", "TIME_INVALID"),
        ("opening_hours[3].closes", "CLOSES_NOT_AFTER_OPENS"),
    ]


def test_look_alike_digits_and_trailing_newlines_are_not_numbers():
    assert not is_mobile_phone("13800000000\n")
    assert not is_mobile_phone("138０００００００００")
    assert not is_national_id("1101051949123100²X")
    v = Violations()
    check_registration(v, platform_rider_id="rider-1\n", name="x", phone="13800000000",
                       national_id="")
    assert [x.field for x in v.items] == ["platform_rider_id"]
