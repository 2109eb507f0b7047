"""The terms of service a person must accept before a Canvas JWT can create a session."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Terms"]


@dataclass(frozen=True, slots=True)
class Terms:
    """The current terms. Acceptance is recorded per version, so publishing a new version
    (a new ``version`` string) means everyone accepts again."""

    version: str
    text: str
