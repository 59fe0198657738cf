"""A helpdesk MCP server on FastMCP 2.14 (PyPI ``fastmcp``) with pydantic-typed tools as people
write them: nested models, optional fields, enums, discriminated and plain unions, ``Decimal``,
``date``/``date-time``/``time``/UUID/email formats, sets and tuples, a ``\\p{L}`` pattern for
international names, and ``{path*}`` resource templates (FastMCP's multi-segment wildcard).

FastMCP 2.14 needs ``mcp<2``, so this runs under its own interpreter (``.cache/fastmcp``,
made by ``make deps``), started by tests/e2e/test_fastmcp.py::

    .cache/fastmcp/bin/python tests/e2e/fastmcp_server.py --port N

It imports nothing from this repository.
"""

from __future__ import annotations

import argparse
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Annotated, Literal
from uuid import UUID

from fastmcp import FastMCP
from pydantic import BaseModel, EmailStr, Field

# What pydantic/zod publish for "a person's name in any script" (ECMA-262 `\p{L}`, `u` mode).
PersonName = Annotated[str, Field(pattern=r"^[\p{L} .'-]{1,80}$", description="Full name, any script")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]


class Priority(str, Enum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Channel(str, Enum):
    email = "email"
    phone = "phone"
    chat = "chat"


class Address(BaseModel):
    street: str = Field(min_length=1, max_length=120)
    city: str = Field(min_length=1, max_length=80)
    postal_code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9 -]{1,9}$")
    country: CountryCode


class Contact(BaseModel):
    name: PersonName
    email: EmailStr
    phone: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$", description="E.164")
    address: Address | None = None
    preferred_channel: Channel = Channel.email


class NewTicket(BaseModel):
    title: str = Field(min_length=3, max_length=120)
    body: str = Field(max_length=4000)
    priority: Priority = Priority.normal
    tags: list[str] = Field(default_factory=list, max_length=10)
    due: datetime | None = None
    requester: Contact


class DateRange(BaseModel):
    kind: Literal["range"]
    start: date
    end: date


class Keyword(BaseModel):
    kind: Literal["keyword"]
    text: str = Field(min_length=1, max_length=100)


class StatusIs(BaseModel):
    kind: Literal["status"]
    status: Literal["open", "pending", "closed"]


TicketFilter = Annotated[DateRange | Keyword | StatusIs, Field(discriminator="kind")]


class QuietHours(BaseModel):
    start: time
    end: time


class Preferences(BaseModel):
    language: str = Field("en", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    notifications: dict[str, bool] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    digest: Literal["never", "daily", "weekly"] = "daily"


class Assignment(BaseModel):
    ticket_id: UUID
    agent_email: EmailStr
    priority: Priority | None = None


class Unit(str, Enum):
    kilogram = "kg"
    pound = "lb"
    meter = "m"
    foot = "ft"


def build() -> FastMCP:
    mcp = FastMCP("helpdesk")

    @mcp.tool
    def ping() -> str:
        """Check that the helpdesk answers."""
        return "pong"

    @mcp.tool
    def create_ticket(ticket: NewTicket) -> dict:
        """Open a support ticket for a requester."""
        return {"created": ticket.title, "priority": ticket.priority.value}

    @mcp.tool
    def get_ticket(ticket_id: UUID, include_history: bool = False) -> dict:
        """Fetch one ticket by its id."""
        return {"id": str(ticket_id), "history": [] if include_history else None}

    @mcp.tool
    def search_tickets(
        query: Annotated[str, Field(max_length=200)] = "",
        filters: list[TicketFilter] = [],  # noqa: B006 - pydantic copies defaults
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        cursor: str | None = None,
    ) -> dict:
        """Search tickets by text, date range or status."""
        return {"matches": 0, "filters": len(filters), "limit": limit}

    @mcp.tool
    def update_contact(contact_id: UUID, contact: Contact) -> str:
        """Replace the contact details of a requester."""
        return f"updated {contact.name}"

    @mcp.tool
    def register_requester(
        name: PersonName,
        email: EmailStr,
        birthday: date | None = None,
        locale: Literal["en-GB", "de-DE", "fr-FR", "ja-JP", "pt-BR"] = "en-GB",
    ) -> str:
        """Register a new requester (names in any script)."""
        return f"registered {name}"

    @mcp.tool
    def schedule_callback(
        ticket_id: UUID,
        at: datetime,
        timezone: Annotated[str, Field(pattern=r"^[A-Za-z_]+(/[A-Za-z_]+){0,2}$")] = "UTC",
        note: str | None = None,
    ) -> str:
        """Schedule a phone callback for a ticket."""
        return f"callback at {at.isoformat()}"

    @mcp.tool
    def issue_refund(
        order_id: Annotated[str, Field(pattern=r"^ORD-\d{6}$")],
        amount: Annotated[Decimal, Field(gt=0, le=10000, decimal_places=2)],
        currency: Literal["EUR", "USD", "GBP"],
        reason: Literal["damaged", "late", "not_as_described", "other"] = "other",
    ) -> str:
        """Refund an order, fully or in part."""
        return f"refunded {amount} {currency}"

    @mcp.tool
    def tag_ticket(ticket_id: UUID, tags: Annotated[set[str], Field(min_length=1, max_length=5)]) -> list[str]:
        """Add tags to a ticket."""
        return sorted(tags)

    @mcp.tool
    def set_preferences(requester_email: EmailStr, preferences: Preferences) -> str:
        """Set a requester's notification preferences."""
        return f"saved for {requester_email}"

    @mcp.tool
    def bulk_assign(assignments: Annotated[list[Assignment], Field(min_length=1, max_length=20)]) -> int:
        """Assign several tickets to agents at once."""
        return len(assignments)

    @mcp.tool
    def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> float:
        """Convert a shipping weight or length."""
        return value

    @mcp.tool
    def find_address(
        query: Annotated[str, Field(min_length=2, max_length=200)],
        country: CountryCode | None = None,
        near: tuple[float, float] | None = None,
    ) -> list[str]:
        """Look up postal addresses (optionally near a latitude/longitude)."""
        return []

    @mcp.tool
    def log_time(ticket_id: UUID, minutes: Annotated[int, Field(gt=0, le=1440)], billable: bool | None = None,
                 on: date | None = None) -> str:
        """Log time spent on a ticket."""
        return f"{minutes} min"

    @mcp.resource("kb://index")
    def kb_index() -> str:
        """The knowledge-base table of contents."""
        return "billing/refunds.md\nshipping/eu/returns.md"

    @mcp.resource("kb://articles/{path*}")
    def kb_article(path: str) -> str:
        """A knowledge-base article, by its path below articles/."""
        return f"# {path}\n"

    @mcp.resource("docs://{version}/{path*}")
    def versioned_doc(version: str, path: str) -> str:
        """Product documentation for one release."""
        return f"{version}: {path}"

    @mcp.prompt
    def reply_to_ticket(ticket_title: str, tone: str = "friendly") -> str:
        """Draft a reply to a ticket."""
        return f"Write a {tone} reply to: {ticket_title}"

    return mcp


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    build().run(transport="http", host="127.0.0.1", port=a.port, path="/mcp", show_banner=False, log_level="warning")
