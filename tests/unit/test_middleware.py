from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from tenantry.presentation.middleware import accepted_request_id


@given(st.from_regex(r"\A[A-Za-z0-9._:-]{1,128}\Z"))
def test_a_well_formed_request_id_is_kept(value: str) -> None:
    assert accepted_request_id(value) == value


@given(st.text())
def test_whatever_comes_in_a_well_formed_id_goes_out(value: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", accepted_request_id(value))


def test_malformed_ids_are_replaced() -> None:
    for bad in ["a" * 500, "abc\x00def", "abc\r\nX-Injected: 1", "", "héllo", "a b"]:
        assert accepted_request_id(bad) != bad
    assert accepted_request_id(None)
