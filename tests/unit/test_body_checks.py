"""Which request bodies ``master.api.body`` walks in full: every integer that may leave int64,
and not the floats every metrics report carries."""

from __future__ import annotations

import pytest

from master.api import body


@pytest.mark.parametrize(
    "document",
    [
        b"12345678901234567890",
        b'{"a":9223372036854775808}',
        b'{"a": [1, -9223372036854775809]}',
        b'{"a":[\n\t12345678901234567890 ]}',
    ],
)
def test_an_integer_of_19_digits_or_more_is_walked(document: bytes) -> None:
    assert body._long_integer(document)


@pytest.mark.parametrize(
    "document",
    [
        b'{"loss": 0.0003333333333333333}',
        b'{"a": 1234567890123456789012.5, "b": 12345678901234567890e3, "c": 1e19}',
        b'{"a": -0.0000000000000000000001, "b": 1e-1234567890123456789012}',
    ],
)
def test_the_digits_of_floats_are_not_walked(document: bytes) -> None:
    assert not body._long_integer(document)


def test_an_integer_outside_int64_is_refused_and_a_long_float_is_not() -> None:
    with pytest.raises(body._Refused, match=r"body\.a\.1: 9223372036854775808 is outside"):
        body.check_json_body(b'{"a": [0.0003333333333333333, 9223372036854775808]}')
    body.check_json_body(b'{"a": [0.0003333333333333333, 92233720368547758080.0]}')
