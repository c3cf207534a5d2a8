"""The messages routes: a conversation per account between its customer and the operator.

The operator may read and write every account's conversation; a customer only their own
account's (the account reference of their meter). Messages are kept off chain in
``DATA_DIR/api/messages.sqlite`` (``server.api.conversations``). A message sent is published live
(``message``) to the account's meters' dashboards and the operator's, and so is a side marking
the other's messages read (``messages_read``); reading the list marks nothing.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from common import errors
from common.logs import log_event
from server.api.auth import Principal
from server.api.conversations import Author, Conversations, Message, Summary
from server.api.routes import INVALID, UNAUTHORIZED, ApiContext, Caller, Ctx, PageNo, PageSize, _page, answers
from server.api.schemas import Page, iso
from server.indexing.index import MeterRecord

__all__ = ["router", "MessageIn", "MessageOut", "ReadIn", "ReadOut", "ConversationOut", "ConversationPage",
           "message_out"]

log = logging.getLogger("api")
router = APIRouter(prefix="/api/v1", tags=["messages"])
ACCOUNT_REF = re.compile(r"^0x[0-9a-fA-F]{64}$")
#: The largest id SQLite stores (a signed 64-bit integer).
MAX_ID = 2**63 - 1


# The errors these routes answer, beside the API's common ones, for the OpenAPI description.
FORBIDDEN = (403, "`forbidden`: a customer's credentials naming another account (or one that does not exist)")
NOT_FOUND = (404, "`not_found`: no account has this reference")
FULL = (409, "`conversation_full`: the conversation holds MESSAGE_MAX_PER_ACCOUNT messages; nothing was sent")
TOO_FAST = (429, "`too_many_messages`: more than MESSAGE_RATE_PER_MINUTE messages from one side to one account in "
                 "a minute; wait `Retry-After` seconds")
ACCOUNT_ERRORS = (UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID)
AccountRef = Annotated[str, Path(pattern=ACCOUNT_REF.pattern,
                                 description="the account's reference (on chain): 0x and 64 hex digits")]


# ---------------------------------------------------------------- shapes


class MessageIn(BaseModel):
    """A message to send: 1 to MESSAGE_MAX_CHARS characters once trimmed; no control characters but newline and tab."""

    body: str = Field(description="the message's text")


class ReadIn(BaseModel):
    """Mark the other side's messages read, up to and including this id."""

    up_to_id: int = Field(ge=0, le=MAX_ID, description="the newest message id the reader has seen")


class MessageOut(BaseModel):
    """One message in an account's conversation."""

    id: int
    account_ref: str
    author: Literal["customer", "operator"]
    body: str
    sent_at: str
    read_at: str | None = Field(description="when the other side marked it read; null while unread")


class ReadOut(BaseModel):
    """What marking messages read changed."""

    account_ref: str
    reader: Literal["customer", "operator"]
    up_to_id: int
    marked: int = Field(description="messages marked read now (those already read keep their mark)")
    unread: int = Field(description="the other side's messages still unread by the reader")


class ConversationMeter(BaseModel):
    """A meter of the account."""

    address: str
    name: str | None


class ConversationOut(BaseModel):
    """An account's conversation in brief."""

    account_ref: str
    meters: list[ConversationMeter]
    customer_name: str | None = Field(description="the account holder, from the operator's customer records")
    messages: int
    unread: int = Field(description="messages of the other side the caller has not marked read")
    last_message: MessageOut | None


class ConversationPage(Page[ConversationOut]):
    """One page of conversations, and how many messages the caller has not read in all of them."""

    unread: int


def message_out(m: Message) -> MessageOut:
    """A stored message for the API."""
    return MessageOut(id=m.id, account_ref=m.account_ref, author=m.author, body=m.body,
                      sent_at=iso(int(m.sent_at)) or "", read_at=iso(int(m.read_at)) if m.read_at is not None else None)


# ---------------------------------------------------------------- accounts and access


@dataclass(frozen=True)
class Account:
    """An account as the messages routes see it: its reference and its meters in the index."""

    ref: str
    meters: list[MeterRecord]

    def audience(self, who: Principal) -> list[str]:
        """The meters whose dashboards hear of this account's messages."""
        return [m.address for m in self.meters] + ([who.meter] if who.meter else [])


def _store(ctx: ApiContext) -> Conversations:
    if ctx.conversations is None:
        raise errors.NotFound("this server keeps no messages")
    return ctx.conversations


def _side(who: Principal) -> Author:
    return "operator" if who.is_operator else "customer"


def _own_ref(ctx: ApiContext, who: Principal) -> str | None:
    """A customer's account reference: their meter's in the index, else their customer record's."""
    meter = ctx.index.meter(who.meter or "")
    if meter is not None:
        return meter.account_ref.lower()
    customer = ctx.customers.by_meter(who.meter or "")
    return customer.account_ref.lower() if customer is not None and customer.account_ref else None


def _meters_by_account(ctx: ApiContext) -> dict[str, list[MeterRecord]]:
    out: dict[str, list[MeterRecord]] = {}
    for m in ctx.index.meters():
        out.setdefault(m.account_ref.lower(), []).append(m)
    return out


def _account(ctx: ApiContext, who: Principal, ref: str) -> Account:
    """The account ``ref`` names, once the caller may see it: 403 another's (or none) for a customer, 404 unknown."""
    ref = ref.lower()
    if not who.is_operator and _own_ref(ctx, who) != ref:
        raise errors.Forbidden("a customer may read and write only their own account's messages")
    meters = [m for m in ctx.index.meters() if m.account_ref.lower() == ref]
    if not meters and who.is_operator and not _store(ctx).summaries(ref):
        raise errors.NotFound(f"no account {ref} is registered")
    return Account(ref, meters)


def _conversation(ctx: ApiContext, ref: str, meters: list[MeterRecord], summary: Summary | None,
                  side: Author) -> ConversationOut:
    records = {m.address: ctx.customers.by_meter(m.address) for m in meters}
    shown = sorted(meters, key=lambda m: ((c := records[m.address]) is None, c.meter_name if c else "", m.address))
    holder = next((c.name for m in shown if (c := records[m.address]) is not None and c.name), None)
    return ConversationOut(
        account_ref=ref,
        meters=[ConversationMeter(address=m.address, name=c.meter_name if (c := records[m.address]) else None)
                for m in shown],
        customer_name=holder, messages=summary.messages if summary else 0,
        unread=summary.unread_by(side) if summary else 0,
        last_message=message_out(summary.last) if summary else None)


# ---------------------------------------------------------------- routes


@router.get("/conversations", response_model=ConversationPage, responses=answers(*ACCOUNT_ERRORS))
async def conversations(
    request: Request, ctx: Ctx, who: Caller,
    with_messages: Annotated[bool, Query(description="only accounts that have messages")] = False,
    account_ref: Annotated[str | None, Query(pattern=ACCOUNT_REF.pattern,
                                             description="this account's conversation only")] = None,
    page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """Every account's conversation (the operator) or the customer's own, newest activity first.

    Accounts without messages follow, by meter name; ``unread`` counts the other side's messages
    the caller has not marked read, in each conversation and in all of them.
    """
    store, side = _store(ctx), _side(who)
    if account_ref is not None:
        account = _account(ctx, who, account_ref)
        accounts = {account.ref: account.meters}
        summaries = store.summaries(account.ref)
    elif who.is_operator:
        accounts = _meters_by_account(ctx)
        summaries = store.summaries()
        for ref in summaries:
            accounts.setdefault(ref, [])
    else:
        own = _own_ref(ctx, who)
        accounts = {own: [m for m in ctx.index.meters() if m.account_ref.lower() == own]} if own else {}
        summaries = store.summaries(own) if own else {}
    listed = [_conversation(ctx, ref, meters, summaries.get(ref), side) for ref, meters in accounts.items()
              if summaries.get(ref) or not with_messages]
    listed.sort(key=lambda c: (c.last_message is None, -(c.last_message.id if c.last_message else 0),
                               (c.meters[0].name or "~") if c.meters else "~", c.account_ref))
    offset = (page - 1) * page_size
    paged = _page(request, len(listed), page, page_size, listed[offset:offset + page_size])
    return {**paged, "unread": sum(s.unread_by(side) for s in summaries.values())}


@router.get("/accounts/{ref}/messages", response_model=Page[MessageOut], responses=answers(*ACCOUNT_ERRORS))
async def messages(
    request: Request, ctx: Ctx, who: Caller, ref: AccountRef,
    order_by: Annotated[Literal["sent_at", "-sent_at"], Query(description="'-sent_at' newest first, "
                                                                          "'sent_at' oldest first")] = "-sent_at",
    page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """An account's messages, a page at a time; reading them marks nothing read."""
    account = _account(ctx, who, ref)
    count, rows = _store(ctx).messages(account.ref, order_by == "-sent_at", page_size, (page - 1) * page_size)
    return _page(request, count, page, page_size, [message_out(m) for m in rows])


@router.post("/accounts/{ref}/messages", response_model=MessageOut, status_code=201,
             responses=answers(*ACCOUNT_ERRORS, FULL, TOO_FAST))
async def send(ctx: Ctx, who: Caller, ref: AccountRef, body: MessageIn) -> MessageOut:
    """Send a message to the account's conversation, as the customer or the operator (the caller's role)."""
    account = _account(ctx, who, ref)
    side = _side(who)
    try:
        stored = _store(ctx).add(account.ref, side, body.body, time.time())
    except (errors.TooManyMessages, errors.ConversationFull) as err:
        log_event(log, "message_refused", account=account.ref, author=side, code=err.code)
        raise
    out = message_out(stored)
    log_event(log, "message_sent", account=account.ref, author=side, id=stored.id, chars=len(stored.body))
    ctx.feed.publish("message", None, {"message": out.model_dump()}, meters=account.audience(who))
    return out


@router.post("/accounts/{ref}/messages/read", response_model=ReadOut, responses=answers(*ACCOUNT_ERRORS))
async def mark_read(ctx: Ctx, who: Caller, ref: AccountRef, body: ReadIn) -> ReadOut:
    """Mark the other side's messages up to ``up_to_id`` read by the caller's side."""
    account = _account(ctx, who, ref)
    side, store = _side(who), _store(ctx)
    now = time.time()
    marked = store.mark_read(account.ref, side, body.up_to_id, now)
    if marked:
        ctx.feed.publish("messages_read", None, {"account_ref": account.ref, "reader": side, "up_to_id": body.up_to_id,
                                                 "read_at": iso(int(now))}, meters=account.audience(who))
    return ReadOut(account_ref=account.ref, reader=side, up_to_id=body.up_to_id, marked=marked,
                   unread=store.unread(account.ref, side))
