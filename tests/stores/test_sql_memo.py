"""The SQL stores reuse the objects of rows they converted lately (institutions and users are
read on every create): a row that changed in any column is converted afresh, and the memo stays
bounded."""

from __future__ import annotations

from typing import Any

from commons_session.stores.sql import Row, _RowMemo


def test_a_changed_row_is_converted_afresh_and_the_memo_stays_bounded() -> None:
    converted: list[Row] = []

    def convert(row: Row) -> tuple[Any, ...]:
        converted.append(row)
        return tuple(row)

    memo = _RowMemo(convert, size=2)
    first = memo((1, "key", "secret", None))
    assert memo((1, "key", "secret", None)) is first
    rotated = memo((1, "key", "new", "secret"))
    assert rotated == (1, "key", "new", "secret") and len(converted) == 2
    memo((2, "other", "s", None))  # the oldest goes
    assert len(memo.seen) == 2
    memo((1, "key", "secret", None))
    assert len(converted) == 4


def test_rows_that_cannot_be_keyed_are_converted_every_time() -> None:
    memo = _RowMemo(lambda row: dict(row[1]))
    row = (1, {"settings": "as PostgreSQL's JSONB"})
    assert memo(row) == memo(row) == {"settings": "as PostgreSQL's JSONB"}
    assert memo.seen == {}
