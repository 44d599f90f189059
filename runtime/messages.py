"""Chat messages, as stored in sessions and passed to providers and handlers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Message", "Role"]

Role = Literal["user", "agent"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a session.

    Attributes:
        id: unique message id.
        session_id: the session it belongs to.
        role: ``"user"`` or ``"agent"``.
        content: the text.
        created_at: seconds since the epoch; strictly increasing within a session.
        metadata: JSON-compatible extra data.
    """

    id: str
    session_id: str
    role: Role
    content: str
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (the stored form)."""
        return {
            "id": self.id,
            "session_id": self.session_id,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Rebuild a message from :meth:`to_dict` output."""
        role = data["role"]
        if role not in ("user", "agent"):
            raise ValueError(f"message role must be 'user' or 'agent', not {role!r}")
        return cls(
            id=str(data["id"]),
            session_id=str(data["session_id"]),
            role=role,
            content=str(data["content"]),
            created_at=float(data["created_at"]),
            metadata=dict(data.get("metadata") or {}),
        )
