"""Alert ids are uuid5 of (rule, symbol, minute) in the alert namespace, whatever way they are computed."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from screener.events.models import ALERT_ID_NAMESPACE, alert_id


@given(
    rule_type=st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
    symbol=st.text(min_size=1, max_size=20),
    minute=st.integers(min_value=0, max_value=2**53),
)
def test_alert_id_is_the_uuid5_of_rule_symbol_and_minute(rule_type: str, symbol: str, minute: int) -> None:
    assert alert_id(rule_type, symbol, minute) == str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{rule_type}|{symbol}|{minute}"))
