"""Who is asking: the operator (an API key), or a customer (their account's API key, or a
bearer token got by signing a challenge with their meter's key).

A customer signs in with the meter's own key the same way the meter logs in to the gateway:
``POST /api/v1/auth/challenge?meter=...`` gives a nonce for that (registered) meter, the meter
signs the EIP-712 ``Login(meter, nonce)`` under the deployment's domain, and ``POST
/api/v1/auth/token`` trades the signature for a token. A nonce is good once, for its meter and
for ``CHALLENGE_TTL`` seconds. Tokens and nonces are HMAC-signed with a secret kept in
``DATA_DIR/api/``, so they survive a restart; tokens expire after ``API_TOKEN_TTL`` seconds.

Both sign-in routes need no credentials, so they are rate-limited per client address
(``API_SIGNIN_RATE_PER_SECOND``, ``API_SIGNIN_BURST``). A challenge takes no slot on the server
(``server.api.challenges``: the nonce authenticates itself), so no flood, from however many
addresses, can push out a customer's pending challenge.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from eth_utils import to_checksum_address

from common import errors
from common.customers import Customers
from common.eip712 import Domain, recover_login_signer
from common.logs import fingerprint
from common.settings import Settings
from server.api.challenges import ChallengeSigner
from server.api.throttle import ClientLimiter

__all__ = ["Principal", "Authenticator", "OPERATOR_KEY_FILE", "dashboard_link"]

OPERATOR_KEY_FILE = "operator.key"
TOKEN_SECRET_FILE = "token.secret"
TOKEN_PREFIX = "v1"


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the operator, or the customer of one meter."""

    role: Literal["operator", "customer"]
    meter: str | None = None
    via: str = "api_key"

    @property
    def is_operator(self) -> bool:
        """Whether this is the operator, who sees and may change everything."""
        return self.role == "operator"

    def check_meter(self, meter: str) -> None:
        """Refuse a customer asking about a meter other than their own."""
        if not self.is_operator and (self.meter or "").lower() != meter.lower():
            raise errors.Forbidden("a customer may see only their own meter")

    def require_operator(self) -> None:
        """Refuse anybody but the operator."""
        if not self.is_operator:
            raise errors.Forbidden("only the operator may do this")


def _secret_file(path: Path, make: str) -> str:
    """Read a secret from ``path``, creating it (readable by its owner only) on first use."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(make + "\n")
    tmp.replace(path)
    return make


class Authenticator:
    """Checks credentials and issues sign-in challenges and tokens."""

    def __init__(self, settings: Settings, domain: Domain, customers: Customers) -> None:
        api_dir = settings.data_dir / "api"
        self.operator_key = settings.operator_api_key or _secret_file(
            api_dir / OPERATOR_KEY_FILE, secrets.token_urlsafe(24))
        self._operator_digest = hashlib.sha256(self.operator_key.encode()).digest()
        self._secret = bytes.fromhex(_secret_file(api_dir / TOKEN_SECRET_FILE, secrets.token_hex(32)))
        self.domain = domain
        self.customers = customers
        self.token_ttl = settings.api_token_ttl
        self.challenges = ChallengeSigner(self._secret, settings.challenge_ttl)
        self.limiter = ClientLimiter(settings.api_signin_rate_per_second, settings.api_signin_burst)

    # ---------------------------------------------------------------- sign-in with a meter key

    def throttle(self, client: str, now: float) -> None:
        """Count a sign-in request of ``client`` (monotonic ``now``); TooManyRequests past its rate."""
        self.limiter.check(client, now)

    def challenge(self, meter: str, known: bool, now: float) -> tuple[str, int]:
        """A fresh nonce (0x-hex) for a registered meter to sign, and when it expires."""
        if not known:
            raise errors.UnknownMeter(f"meter {meter} is not registered")
        nonce, expires = self.challenges.issue(meter, now)
        return "0x" + nonce.hex(), expires

    def sign_in(self, meter: str, nonce: str, signature: str, known: bool, now: float) -> tuple[str, int]:
        """Trade a signed challenge for a token; ``known`` says whether the meter is registered."""
        raw = bytes.fromhex(nonce[2:])
        refused = self.challenges.check(meter, raw, now)
        if refused == "expired":
            raise errors.ChallengeExpired("the challenge expired; ask for a new one")
        if refused is not None:
            raise errors.ChallengeMismatch("this nonce was not issued for this meter, or was already used; "
                                           "ask for a new challenge")
        signer = recover_login_signer(self.domain, meter, raw, signature)
        if signer is None or signer.lower() != meter.lower():
            raise errors.BadLoginSignature("the signature is not the meter's signature of this challenge")
        self.challenges.spend(raw, now)
        if not known:
            raise errors.UnknownMeter(f"meter {meter} is not registered")
        until = int(now + self.token_ttl)
        body = f"{TOKEN_PREFIX}.{to_checksum_address(meter)}.{until}"
        return f"{body}.{self._mac(body)}", until

    def _mac(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()

    # ---------------------------------------------------------------- checking credentials

    def authenticate(self, api_key: str | None, token: str | None, now: float | None = None) -> Principal:
        """The principal behind an API key or a bearer token; Unauthorized when neither is good."""
        if api_key:
            if hmac.compare_digest(hashlib.sha256(api_key.encode()).digest(), self._operator_digest):
                return Principal("operator", via="api_key")
            customer = self.customers.by_api_key(api_key)
            if customer is not None:
                return Principal("customer", to_checksum_address(customer.meter), via="api_key")
            raise errors.Unauthorized(f"this API key is not known ({fingerprint(api_key)})")
        if token:
            return self._check_token(token, time.time() if now is None else now)
        raise errors.Unauthorized()

    def _check_token(self, token: str, now: float) -> Principal:
        """The customer a token names; a refusal names the token by its ``fingerprint`` only, never whole."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_PREFIX:
            raise errors.Unauthorized(f"the bearer token ({fingerprint(token)}) is malformed; sign in again")
        body = ".".join(parts[:3])
        # Bytes, not str: compare_digest refuses str with non-ASCII characters (a header may carry them).
        if not hmac.compare_digest(parts[3].encode(), self._mac(body).encode()):
            raise errors.Unauthorized(f"the bearer token ({fingerprint(token)}) was not issued by this server; "
                                      "sign in again")
        if not parts[2].isdigit() or int(parts[2]) < now:
            raise errors.Unauthorized(f"the bearer token ({fingerprint(token)}) expired; sign in again")
        return Principal("customer", parts[1], via="token")


def dashboard_link(settings: Settings, signed_in: bool = True) -> str:
    """The dashboard's address signed in as the operator (the key rides in the fragment, never sent
    to the server in the URL), or, for output that is kept (a log, not a terminal), the address and where
    the operator's key is; empty when the API is off."""
    if not settings.http_port:
        return ""
    key_file = settings.data_dir / "api" / OPERATOR_KEY_FILE
    if not signed_in:
        where = "OPERATOR_API_KEY" if settings.operator_api_key else str(key_file)
        return f"{settings.http_url}/ (sign in with the operator's key: {where})"
    key = settings.operator_api_key or key_file.read_text().strip()
    return f"{settings.http_url}/#key={key}"
