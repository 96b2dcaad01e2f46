"""The one error of the wire contract."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message, name or signed field that does not follow the contract."""
