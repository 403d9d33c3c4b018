"""The booking API's request and response bodies (pydantic v2, camelCase on the wire).

Rules of a booking, each failing with a message that names the problem (the 422's `loc` names the field):
- airports: a string, not blank, at most 100 characters after trimming surrounding spaces, no control
  characters (PostgreSQL cannot store NUL; a newline in an airport name is a client bug);
- date-times: an ISO-8601 string WITH a time zone offset (`Z`, `+02:00`); a naive date-time is refused
  rather than guessed to be UTC; numbers (epoch seconds) are refused too;
- date-times between 0001-01-02 and 9999-12-30 in UTC: beyond, a date cannot be read back in every session
  time zone (Python's datetime ends at year 9999; a UTC+9 session shows 9999-12-31T23:59Z as year 10000);
- the arrival is strictly after the departure (reported on `arrivalDateTime`);
- no other fields.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic_core import PydanticCustomError

MAX_AIRPORT_LENGTH = 100
EXAMPLE_DEPARTURE = "2023-09-01T08:00:00Z"
EXAMPLE_ARRIVAL = "2023-09-01T08:15:00Z"
# One day inside Python's range on each side: every time zone offset (at most ±16 h) can show the value.
EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
# Unicode's control characters (category Cc) are exactly C0, DEL and C1: one regex search instead of a
# category lookup per character (a per-character loop was a quarter of a booking's validation CPU).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _airport(value: str) -> str:
    value = value.strip()
    if not value:
        raise PydanticCustomError("blank", "must not be blank")
    if len(value) > MAX_AIRPORT_LENGTH:
        raise PydanticCustomError(
            "too_long",
            "must be at most {max} characters (got {length})",
            {"max": MAX_AIRPORT_LENGTH, "length": len(value)},
        )
    if _CONTROL_CHARACTER.search(value):
        raise PydanticCustomError("control_characters", "must not contain control characters")
    return value


def _aware_datetime(value: Any, handler: ValidatorFunctionWrapHandler) -> datetime:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "datetime_type",
            "must be an ISO-8601 date-time string with a time zone offset, e.g. {example}",
            {"example": EXAMPLE_DEPARTURE},
        )
    try:
        parsed: datetime = handler(value)
    except ValueError:  # pydantic's ValidationError is a ValueError
        raise PydanticCustomError(
            "datetime_parsing",
            "must be an ISO-8601 date-time with a time zone offset, e.g. {example}",
            {"example": EXAMPLE_DEPARTURE},
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise PydanticCustomError(
            "datetime_naive",
            "must include a time zone offset, e.g. Z or +02:00 ({example})",
            {"example": EXAMPLE_DEPARTURE},
        )
    try:
        in_range = EARLIEST <= parsed.astimezone(UTC) <= LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise PydanticCustomError(
            "datetime_range",
            "must be between {earliest} and {latest} (UTC)",
            {"earliest": "0001-01-02T00:00:00Z", "latest": "9999-12-30T23:59:59Z"},
        )
    return parsed


Airport = Annotated[str, AfterValidator(_airport)]
_AIRPORT_SCHEMA: dict[str, Any] = {"minLength": 1, "maxLength": MAX_AIRPORT_LENGTH, "examples": ["Paris"]}
AwareDateTime = Annotated[datetime, WrapValidator(_aware_datetime)]


class FlightIn(BaseModel):
    """A booking request: the seed's four fields."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "departureAirport": "Paris",
                    "arrivalAirport": "London",
                    "departureDateTime": EXAMPLE_DEPARTURE,
                    "arrivalDateTime": EXAMPLE_ARRIVAL,
                }
            ]
        },
    )

    departure_airport: Airport = Field(
        alias="departureAirport",
        title="departureAirport",
        description="Where the flight leaves from (1-100 characters).",
        json_schema_extra=_AIRPORT_SCHEMA,
    )
    arrival_airport: Airport = Field(
        alias="arrivalAirport",
        title="arrivalAirport",
        description="Where the flight lands (1-100 characters).",
        json_schema_extra=_AIRPORT_SCHEMA,
    )
    departure_date_time: AwareDateTime = Field(
        alias="departureDateTime",
        title="departureDateTime",
        description="ISO-8601 date-time with a time zone offset, e.g. 2023-09-01T08:00:00Z.",
    )
    arrival_date_time: AwareDateTime = Field(
        alias="arrivalDateTime",
        title="arrivalDateTime",
        description="ISO-8601 date-time with a time zone offset, after the departure.",
    )

    @field_validator("arrival_date_time")
    @classmethod
    def _arrival_after_departure(cls, value: datetime, info: ValidationInfo) -> datetime:
        departure = info.data.get("departure_date_time")
        if departure is not None and value <= departure:
            raise PydanticCustomError("arrival_not_after_departure", "must be after departureDateTime")
        return value


class Flight(BaseModel):
    """A stored flight, as the API returns it (and as the FlightBooked event carries it)."""

    model_config = ConfigDict(populate_by_name=True)

    id: int = Field(examples=[1])
    departure_airport: str = Field(alias="departureAirport", examples=["Paris"])
    arrival_airport: str = Field(alias="arrivalAirport", examples=["London"])
    departure_date_time: str = Field(alias="departureDateTime", examples=[EXAMPLE_DEPARTURE])
    arrival_date_time: str = Field(alias="arrivalDateTime", examples=[EXAMPLE_ARRIVAL])


def iso_utc(value: datetime) -> str:
    """A date-time as ISO-8601 in UTC with a `Z`: seconds, or milli-/microseconds when it has them."""
    value = value.astimezone(UTC)
    micro = value.microsecond
    base = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if micro == 0:
        return base + "Z"
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}Z"
    return f"{base}.{micro:06d}Z"


def flight_json(
    flight_id: int,
    departure_airport: str,
    arrival_airport: str,
    departure_date_time: datetime,
    arrival_date_time: datetime,
) -> dict[str, Any]:
    """The API's (and the event's) view of a flight row."""
    return {
        "id": flight_id,
        "departureAirport": departure_airport,
        "arrivalAirport": arrival_airport,
        "departureDateTime": iso_utc(departure_date_time),
        "arrivalDateTime": iso_utc(arrival_date_time),
    }
