"""Every error the system reports, as one small tree with stable machine codes.

Each class has a ``code`` (stable, snake_case, part of the wire protocol and the API) and a
default human sentence. Raise with a specific message that says what happened and what to do.
"""

from __future__ import annotations

__all__ = [
    "SmartMeterError",
    "ConfigError",
    "ProtocolError",
    "MalformedMessage",
    "MessageTooLarge",
    "UnsupportedFrame",
    "UnexpectedMessage",
    "NotAuthenticated",
    "AuthError",
    "ChallengeExpired",
    "ChallengeMismatch",
    "BadLoginSignature",
    "UnknownMeter",
    "MeterInactive",
    "ReadingError",
    "BadSignature",
    "WrongMeter",
    "StaleSequence",
    "SequenceGap",
    "StaleTimestamp",
    "FutureTimestamp",
    "RegisterDecreased",
    "ImplausibleDelta",
    "OutOfRange",
    "PeriodOverflow",
    "RateLimited",
    "Overloaded",
    "ChainError",
    "ChainUnavailable",
    "FeesTooHigh",
    "TransactionLost",
    "NotFinal",
    "DeploymentMissing",
    "GatewayUnavailable",
    "AlreadyRunning",
    "StorageError",
    "StatementMismatch",
    "ApiError",
    "Unauthorized",
    "CredentialsInUrl",
    "Forbidden",
    "NotFound",
    "InvalidRequest",
    "ConversationFull",
    "TooManyMessages",
    "ERROR_CODES",
    "error_for_code",
]


class SmartMeterError(Exception):
    """Base of every error the project raises on purpose."""

    code = "internal_error"
    default_message = "an internal error occurred"

    def __init__(self, message: str | None = None, *, seq: int | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.seq = seq


class ConfigError(SmartMeterError):
    """Raised when a setting is missing or wrong; the message names the setting."""

    code = "config_error"
    default_message = "a setting is missing or invalid"


class ProtocolError(SmartMeterError):
    """Raised when a peer breaks the wire protocol."""

    code = "protocol_error"
    default_message = "the message breaks the protocol"


class MalformedMessage(ProtocolError):
    """Raised when a message is not JSON, or lacks a field, or a field has the wrong type."""

    code = "malformed_message"
    default_message = "the message is not valid JSON of a known type"


class MessageTooLarge(ProtocolError):
    """Raised when a message exceeds the configured maximum size."""

    code = "message_too_large"
    default_message = "the message is larger than the server accepts"


class UnsupportedFrame(ProtocolError):
    """Raised when a binary frame arrives: the protocol is JSON text only."""

    code = "unsupported_frame"
    default_message = "binary frames are not accepted; send JSON text"


class UnexpectedMessage(ProtocolError):
    """Raised when a valid message arrives in a state where it makes no sense."""

    code = "unexpected_message"
    default_message = "this message is not expected now"


class NotAuthenticated(ProtocolError):
    """Raised when a reading arrives before login."""

    code = "not_authenticated"
    default_message = "log in before sending readings"


class AuthError(SmartMeterError):
    """Raised when a login fails; the connection is closed with a policy code."""

    code = "auth_failed"
    default_message = "login failed"


class ChallengeExpired(AuthError):
    """Raised when a login answers a challenge that has expired."""

    code = "challenge_expired"
    default_message = "the login challenge expired; reconnect for a new one"


class ChallengeMismatch(AuthError):
    """Raised when a login answers a challenge other than the one issued on this connection."""

    code = "challenge_mismatch"
    default_message = "the login answers a challenge this server did not issue on this connection"


class BadLoginSignature(AuthError):
    """Raised when the login signature does not recover to the claimed address."""

    code = "bad_login_signature"
    default_message = "the login signature does not match the meter address"


class UnknownMeter(AuthError):
    """Raised when the meter is not registered on chain."""

    code = "unknown_meter"
    default_message = "this meter is not registered"


class MeterInactive(AuthError):
    """Raised when the meter is registered but deactivated."""

    code = "meter_inactive"
    default_message = "this meter is deactivated; contact the operator"


class ReadingError(SmartMeterError):
    """Raised when a reading is refused; carries the reading's sequence number."""

    code = "reading_rejected"
    default_message = "the reading was rejected"


class BadSignature(ReadingError):
    """Raised when a reading's signature does not recover to its meter."""

    code = "bad_signature"
    default_message = "the reading's signature does not match its meter"


class WrongMeter(ReadingError):
    """Raised when a reading names a meter other than the one logged in."""

    code = "wrong_meter"
    default_message = "the reading names a meter other than the one logged in"


class StaleSequence(ReadingError):
    """Raised when a reading's sequence number is not above the last accepted one."""

    code = "stale_sequence"
    default_message = "the sequence number is not above the last accepted one"


class SequenceGap(ReadingError):
    """Raised when a reading skips sequence numbers; the meter must send the missing ones first."""

    code = "sequence_gap"
    default_message = "the sequence number skips readings; send the missing ones first"


class StaleTimestamp(ReadingError):
    """Raised when a reading's timestamp is not after the previous reading's."""

    code = "stale_timestamp"
    default_message = "the timestamp is not after the previous reading's"


class FutureTimestamp(ReadingError):
    """Raised when a reading's timestamp is too far ahead of the clock."""

    code = "future_timestamp"
    default_message = "the timestamp is in the future; check the meter's clock"


class RegisterDecreased(ReadingError):
    """Raised when the cumulative register went down."""

    code = "register_decreased"
    default_message = "the register value is below the previous reading's"


class ImplausibleDelta(ReadingError):
    """Raised when the energy since the last reading implies more than the supply's maximum power."""

    code = "implausible_delta"
    default_message = "the energy since the last reading exceeds what the supply can deliver"


class OutOfRange(ReadingError):
    """Raised when a field is larger than the contract stores."""

    code = "out_of_range"
    default_message = "a field is larger than the contract can store"


class PeriodOverflow(ReadingError):
    """Raised on chain when the open billing period outgrew its fields (close it)."""

    code = "period_overflow"
    default_message = "the billing period is full; the operator must close it"


class RateLimited(ReadingError):
    """Raised when a meter sends faster than its rate limit allows."""

    code = "rate_limited"
    default_message = "too many messages; slow down"


class Overloaded(ReadingError):
    """Raised when the server's queue is full; the meter should retry later."""

    code = "overloaded"
    default_message = "the server is busy; retry shortly"


class ChainError(SmartMeterError):
    """Raised when the chain refuses or fails a call."""

    code = "chain_error"
    default_message = "the blockchain node returned an error"


class ChainUnavailable(ChainError):
    """Raised when the chain's RPC endpoint cannot be reached."""

    code = "chain_unavailable"
    default_message = "cannot reach the blockchain node; is it running? start it with ./run-docker.sh"


class FeesTooHigh(ChainError):
    """Raised when the chain's fees are above ``MAX_FEE_GWEI``: the gateway holds its batches until they fall."""

    code = "fees_too_high"
    default_message = "the chain's fees are above MAX_FEE_GWEI; transactions wait until they fall"


class TransactionLost(ChainError):
    """Raised when a submitted transaction can no longer be mined (its nonce went to another of the
    sender's transactions, or an earlier nonce is missing): what it carried must be sent again."""

    code = "transaction_lost"
    default_message = "the transaction will never be mined; what it carried must be sent again"


class NotFinal(ChainError):
    """Raised when a transaction was sent but its block is not final (``CONFIRMATIONS`` deep) in the time allowed:
    it may still be mined, or removed by a reorganisation; look it up by its hash before acting again."""

    code = "not_final"
    default_message = "the transaction was sent, but is not final yet; look it up by its hash before sending again"


class DeploymentMissing(ChainError):
    """Raised when no usable deployment of the contract is recorded for this chain."""

    code = "deployment_missing"
    default_message = "the contract is not deployed on this chain; run scripts/deploy.py"


class GatewayUnavailable(SmartMeterError):
    """The gateway holding the connection cannot reach the rest of the server now (try again shortly)."""

    code = "gateway_unavailable"


class BusUnavailable(GatewayUnavailable):
    """The NATS servers carrying the reading log and the meter bus do not answer (try again shortly)."""

    code = "bus_unavailable"


class AlreadyRunning(SmartMeterError):
    """Raised when a process is started for a meter that another process already runs."""

    code = "already_running"
    default_message = "another process already runs this meter"


class StorageError(SmartMeterError):
    """Raised when a database of the server cannot be opened or read; the message names the file and what to do."""

    code = "storage_error"
    default_message = "a database file of the server cannot be used; see the server's log"


class StatementMismatch(SmartMeterError):
    """Raised when a statement's parts do not add up to the chain's figures (its source missed an event)."""

    code = "statement_mismatch"
    default_message = "the statement does not add up to the chain's figures; rebuild the index from the chain"


class ApiError(SmartMeterError):
    """Raised when a REST API request cannot be answered; ``status`` is its HTTP status."""

    code = "api_error"
    default_message = "the request could not be answered"
    status = 400


class Unauthorized(ApiError):
    """Raised when a request carries no credentials, or credentials the server does not know."""

    code = "unauthorized"
    default_message = "sign in: send an API key (X-API-Key) or a bearer token from /api/v1/auth/token"
    status = 401


class CredentialsInUrl(Unauthorized):
    """Raised when credentials come in a URL's query string (``?key=``, ``?token=``), where every proxy and
    access log keeps them: they are refused even when good, and the caller is told how to send them."""

    code = "credentials_in_url"
    default_message = ("credentials are not taken from the URL, which logs keep; send them in the first message "
                       "after the socket opens: {\"type\": \"auth\", \"key\": ...} or {\"type\": \"auth\", "
                       "\"token\": ...}")


class Forbidden(ApiError):
    """Raised when a customer asks for another account's data, or for what only the operator may do."""

    code = "forbidden"
    default_message = "these credentials may not see or change this"
    status = 403


class NotFound(ApiError):
    """Raised when a request names a meter or record that does not exist."""

    code = "not_found"
    default_message = "nothing exists at this address"
    status = 404


class InvalidRequest(ApiError):
    """Raised when a query parameter or request body is missing or malformed; the message names it."""

    code = "invalid_request"
    default_message = "a parameter of the request is missing or invalid"
    status = 422


class ConversationFull(ApiError):
    """Raised when an account's conversation holds as many messages as an account may keep."""

    code = "conversation_full"
    default_message = "this conversation holds the most messages an account may keep"
    status = 409


class TooManyMessages(ApiError):
    """Raised when a side sends messages to one account faster than the limit; answered 429 with
    ``Retry-After``, the whole seconds ``retry_after`` until a message would be accepted."""

    code = "too_many_messages"
    default_message = "too many messages in a minute; wait before sending another"
    status = 429

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OptOutRefused(ApiError):
    """Raised when the chain refuses a meter's opt-out (the event started, was cancelled, does not target
    the meter, or the meter opted out already); the message gives the contract's reason."""

    code = "opt_out_refused"
    default_message = "the demand-response contract refused this opt-out"
    status = 409


def _all_subclasses(cls: type[SmartMeterError]) -> list[type[SmartMeterError]]:
    out: list[type[SmartMeterError]] = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


ERROR_CODES: dict[str, type[SmartMeterError]] = {c.code: c for c in _all_subclasses(SmartMeterError)}


def error_for_code(code: str, message: str | None = None, seq: int | None = None) -> SmartMeterError:
    """Build the error instance for a wire ``code`` (unknown codes give the base class)."""
    cls = ERROR_CODES.get(code, SmartMeterError)
    return cls(message, seq=seq)
