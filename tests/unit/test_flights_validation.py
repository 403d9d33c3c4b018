"""The booking request's rules, the API's date-time format and the Swagger document rewrite: no database."""

from __future__ import annotations

import sys
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from flights.assets import openapi_30, swagger_ui_dir
from flights.models import _CONTROL_CHARACTER, FlightIn, flight_json, iso_utc

VALID = {
    "departureAirport": "Paris",
    "arrivalAirport": "London",
    "departureDateTime": "2023-09-01T08:00:00.000Z",
    "arrivalDateTime": "2023-09-01T08:15:00.000Z",
}


def errors_of(body: Any) -> list[dict[str, Any]]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(ValidationError) as info:
        FlightIn.model_validate_json(raw)
    return [dict(e) for e in info.value.errors(include_url=False)]


def with_(**changes: Any) -> dict[str, Any]:
    body = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            del body[key]
        else:
            body[key] = value
    return body


def only(body: Any) -> dict[str, Any]:
    errors = errors_of(body)
    assert len(errors) == 1, errors
    return errors[0]


def test_the_seed_booking_is_valid() -> None:
    flight = FlightIn.model_validate_json(orjson.dumps(VALID))
    assert flight.departure_airport == "Paris"
    assert flight.arrival_airport == "London"
    assert flight.departure_date_time == datetime(2023, 9, 1, 8, 0, tzinfo=UTC)
    assert flight.arrival_date_time - flight.departure_date_time == timedelta(minutes=15)


def test_airports_are_trimmed_and_may_be_unicode() -> None:
    flight = FlightIn.model_validate_json(orjson.dumps(with_(departureAirport="  São Paulo ")))
    assert flight.departure_airport == "São Paulo"


@pytest.mark.parametrize("blank", ["", " ", "\t\n ", "\u3000"])
@pytest.mark.parametrize("field", ["departureAirport", "arrivalAirport"])
def test_blank_airports_are_refused(field: str, blank: str) -> None:
    error = only(with_(**{field: blank}))
    assert error["loc"] == (field,)
    assert error["type"] == "blank"
    assert error["msg"] == "must not be blank"


def test_airport_length_is_at_most_100_characters() -> None:
    FlightIn.model_validate_json(orjson.dumps(with_(arrivalAirport="é" * 100)))  # characters, not bytes
    error = only(with_(arrivalAirport="A" * 101))
    assert error["loc"] == ("arrivalAirport",)
    assert error["msg"] == "must be at most 100 characters (got 101)"


@pytest.mark.parametrize("value", ["Par\x00is", "Lon\ndon", "Par\x7fis", "Lon\x85don", "Par\x9fis"])
def test_control_characters_are_refused(value: str) -> None:
    error = only(with_(departureAirport=value))
    assert error["loc"] == ("departureAirport",)
    assert "control characters" in error["msg"]


def test_the_control_character_check_is_unicodes_cc_category() -> None:
    # The check is a regex over C0, DEL and C1 (cheaper than a category lookup per character): it must
    # refuse exactly Unicode's Cc characters, no more (format characters, e.g. U+200B, are text).
    refused = [c for c in range(sys.maxunicode + 1) if _CONTROL_CHARACTER.search(chr(c))]
    assert refused == [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"]
    FlightIn.model_validate_json(orjson.dumps(with_(departureAirport="Z\u200bürich\u00a0Nord")))


@pytest.mark.parametrize("value", [None, 12, ["Paris"], {"name": "Paris"}])
def test_airports_must_be_strings(value: Any) -> None:
    error = only(with_(departureAirport=value))
    assert error["loc"] == ("departureAirport",)
    assert error["type"] == "string_type"


@pytest.mark.parametrize(
    "field", ["departureAirport", "arrivalAirport", "departureDateTime", "arrivalDateTime"]
)
def test_every_field_is_required(field: str) -> None:
    error = only(with_(**{field: ...}))
    assert error["loc"] == (field,)
    assert error["type"] == "missing"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tomorrow",
        "01/09/2023 08:00",
        "2023-13-01T08:00:00Z",
        "2023-02-30T08:00:00Z",
        "2023-09-01T25:00:00Z",
    ],
)
def test_malformed_date_times_are_refused(value: str) -> None:
    error = only(with_(departureDateTime=value))
    assert error["loc"] == ("departureDateTime",)
    assert error["type"] == "datetime_parsing"
    assert error["msg"] == "must be an ISO-8601 date-time with a time zone offset, e.g. 2023-09-01T08:00:00Z"


@pytest.mark.parametrize("value", [1693555200, 1693555200.5, None, True, ["2023-09-01T08:00:00Z"]])
def test_date_times_must_be_strings(value: Any) -> None:
    error = only(with_(departureDateTime=value))
    assert error["loc"] == ("departureDateTime",)
    assert error["type"] == "datetime_type"


@pytest.mark.parametrize("value", ["2023-09-01T08:00:00", "2023-09-01T08:00:00.000", "2023-09-01"])
def test_naive_date_times_are_refused(value: str) -> None:
    error = only(with_(arrivalDateTime=value.replace("08:00", "09:00")))
    assert error["loc"] == ("arrivalDateTime",)
    assert error["type"] == "datetime_naive"
    assert error["msg"].startswith("must include a time zone offset, e.g. Z")


def test_offsets_are_kept_and_compared_as_instants() -> None:
    flight = FlightIn.model_validate_json(
        orjson.dumps(
            with_(departureDateTime="2023-09-01T10:00:00+02:00", arrivalDateTime="2023-09-01T08:01:00Z")
        )
    )
    assert flight.departure_date_time.utcoffset() == timedelta(hours=2)
    # 09:30+02:00 is 07:30 UTC: before the 08:00 UTC departure
    error = only(
        with_(departureDateTime="2023-09-01T10:00:00+02:00", arrivalDateTime="2023-09-01T09:30:00+02:00")
    )
    assert error["loc"] == ("arrivalDateTime",)


def test_date_time_out_of_range_in_utc_is_refused() -> None:
    error = only(with_(arrivalDateTime="9999-12-31T23:00:00-05:00"))
    assert error["loc"] == ("arrivalDateTime",)
    assert error["type"] == "datetime_range"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("arrivalDateTime", "9999-12-31T23:59Z"),  # in range in UTC, year 10000 in a UTC+9 session
        ("arrivalDateTime", "9999-12-31T00:00:00Z"),
        ("departureDateTime", "0001-01-01T23:59:59Z"),  # year 0 in a UTC-1 session
    ],
)
def test_date_times_a_session_time_zone_could_not_show_are_refused(field: str, value: str) -> None:
    error = only(with_(**{field: value}))
    assert error["loc"] == (field,)
    assert (error["type"], error["msg"]) == (
        "datetime_range",
        "must be between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z (UTC)",
    )


def test_the_outermost_date_times_are_accepted() -> None:
    flight = FlightIn.model_validate(
        with_(departureDateTime="0001-01-02T00:00:00Z", arrivalDateTime="9999-12-30T23:59:59.999999Z")
    )
    assert flight.arrival_date_time.year == 9999


@pytest.mark.parametrize(
    "arrival", ["2023-09-01T08:00:00Z", "2023-09-01T07:59:59.999Z", "2022-01-01T00:00:00Z"]
)
def test_arrival_must_be_after_departure(arrival: str) -> None:
    error = only(with_(arrivalDateTime=arrival))
    assert error["loc"] == ("arrivalDateTime",)
    assert error["type"] == "arrival_not_after_departure"
    assert error["msg"] == "must be after departureDateTime"


def test_arrival_check_is_skipped_when_departure_is_itself_invalid() -> None:
    errors = errors_of(with_(departureDateTime="nope", arrivalDateTime="2000-01-01T00:00:00Z"))
    assert [e["loc"] for e in errors] == [("departureDateTime",)]


@pytest.mark.parametrize("extra", ["price", "id", "departure_airport"])
def test_unknown_fields_are_refused(extra: str) -> None:
    error = only(with_(**{extra: "x"}))
    assert error["loc"] == (extra,)
    assert error["type"] == "extra_forbidden"


@pytest.mark.parametrize("body", [b"[]", b"null", b'"x"', b"42"])
def test_body_must_be_an_object(body: bytes) -> None:
    error = only(body)
    assert error["loc"] == ()
    assert error["type"] == "model_type"


@pytest.mark.parametrize("body", [b"", b"{", b"{'a': 1}", b"\xff\xfe"])
def test_body_must_be_json(body: bytes) -> None:
    error = only(body)
    assert error["type"] == "json_invalid"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2023, 9, 1, 8, 0, tzinfo=UTC), "2023-09-01T08:00:00Z"),
        (datetime(2023, 9, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))), "2023-09-01T08:00:00Z"),
        (datetime(2023, 9, 1, 8, 0, 0, 250_000, tzinfo=UTC), "2023-09-01T08:00:00.250Z"),
        (datetime(2023, 9, 1, 8, 0, 0, 123_456, tzinfo=UTC), "2023-09-01T08:00:00.123456Z"),
        (datetime(33, 1, 2, 3, 4, 5, tzinfo=UTC), "0033-01-02T03:04:05Z"),
    ],
)
def test_iso_utc(value: datetime, text: str) -> None:
    assert iso_utc(value) == text


def test_flight_json_is_the_api_shape() -> None:
    dep = datetime(2023, 9, 1, 8, 0, tzinfo=UTC)
    assert flight_json(7, "Paris", "London", dep, dep + timedelta(minutes=15)) == {
        "id": 7,
        "departureAirport": "Paris",
        "arrivalAirport": "London",
        "departureDateTime": "2023-09-01T08:00:00Z",
        "arrivalDateTime": "2023-09-01T08:15:00Z",
    }


def test_openapi_30_rewrites_31_constructs() -> None:
    doc = {
        "openapi": "3.1.0",
        "paths": {},
        "components": {
            "schemas": {
                "A": {
                    "properties": {
                        "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Maybe"},
                        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
                        "n": {"type": "integer", "exclusiveMinimum": 0, "examples": [1, 2]},
                        "k": {"const": "x"},
                    }
                }
            }
        },
    }
    out = openapi_30(doc)
    assert doc["openapi"] == "3.1.0"  # the original is untouched
    props = out["components"]["schemas"]["A"]["properties"]
    assert out["openapi"] == "3.0.3"
    assert props["maybe"] == {"type": "string", "title": "Maybe", "nullable": True}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}
    assert props["n"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "example": 1}
    assert props["k"] == {"enum": ["x"]}


def test_swagger_ui_assets_are_installed() -> None:
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert (swagger_ui_dir() / name).is_file(), name
