"""Determined's paging and ordering of list endpoints (``offset``, ``limit``, ``orderBy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from master.api.errors import bad_request

ORDERS = ("ORDER_BY_UNSPECIFIED", "ORDER_BY_ASC", "ORDER_BY_DESC")


@dataclass(frozen=True)
class Window:
    start: int
    count: int
    pagination: dict[str, int]


def page(offset: int, limit: int, total: int, default_limit: int = 0) -> Window:
    """Rows ``start .. start+count`` of ``total`` and Determined's ``v1Pagination`` for them.

    A negative ``offset`` counts from the end. ``limit`` 0 means ``default_limit`` (0: all),
    -1 all, -2 none (only the count); Determined's client pages on until ``endIndex`` reaches
    ``total``."""
    start = total + offset if offset < 0 else offset
    start = min(max(start, 0), total)
    if limit == 0:
        limit = default_limit
    if limit == -2:
        end = start
    elif limit <= 0:
        end = total
    else:
        end = min(start + limit, total)
    pagination = {
        "offset": offset,
        "limit": limit,
        "startIndex": start,
        "endIndex": end,
        "total": total,
    }
    return Window(start, end - start, pagination)


def sort_order_desc(order_by: str) -> bool:
    """Whether ``orderBy`` asks for descending order (unspecified: ascending)."""
    if order_by not in ORDERS:
        raise bad_request(f"orderBy: {order_by!r} is not one of {list(ORDERS)}")
    return order_by == "ORDER_BY_DESC"


def sort_order(column: Any, order_by: str) -> list[Any]:
    """``column`` ascending or descending as ``orderBy`` says."""
    return [column.desc() if sort_order_desc(order_by) else column.asc()]
