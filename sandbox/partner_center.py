"""A stateful Partner Center simulator: Entra's token endpoint, the referrals API, webhooks, signed deliveries.

Why so strict: the connector's tests are only as good as the simulator's refusals. It behaves exactly as
`partner-center-api.md` says, and where the reference is silent it picks the strict reading:

- Entra (`/{tenant}/...`): the discovery documents MSAL reads with `instance_discovery=False`
  (`/{tenant}/v2.0/.well-known/openid-configuration`), and `/{tenant}/oauth2/v2.0/token` with the
  `refresh_token` grant (App+User tokens; every redemption rotates the refresh token, the old one stays
  valid until revoked, as in Entra) and the `client_credentials` grant (app-only tokens). Refresh
  tokens are opaque; access tokens are JWT-shaped, as Entra's, with an `amr` claim (`["pwd", "mfa"]` or
  `["pwd"]`) inherited from the refresh token's sign-in, and a signature nobody verifies: the referrals API
  refuses an App+User token without MFA with 401 and error `900421`.
- Referrals (`/v1.0/engagements/referrals`): App+User tokens only; OData `$filter` (eq/ne/ge/gt/le/lt on
  status, substatus, updatedDateTime, createdDateTime, engagementId, direction, joined by `and`),
  `$orderby` (createdDateTime/updatedDateTime asc/desc), `$top`, `$skiptoken` paging with
  `@odata.nextLink` written as the reference's examples write it (`http://api.partner.microsoft.com/v1.0/
  referrals?...`: another scheme and host, no `/engagements`; the client must resolve it against its base);
  `$top` at most 100 (the reference's page cap); any other `$` option is a 400. ETags on every read,
  `If-Match` → 412 when stale, JSON Patch (`replace`/`add` only, sent as `application/json` like
  Microsoft's examples, or `application/json-patch+json`), `Prefer: return=representation`, a create
  answered as the reference's example (the partner's own referral comes back Active/Accepted with no
  expiry, status `create_status`: 201, or 200 as Microsoft's connector definition says),
  the status state machine (anything else → 400; Declined/Lost need a statusReason), server-side
  `updatedDateTime`, and incoming referrals expiring to Closed/Expired 14 days after they arrive.
- Webhooks (`/webhooks/v1/registration`): one registration per tenant (registering again replaces it),
  no DELETE, the event list, validation events limited to 2 a minute, their delivery status.
- Deliveries: each event is POSTed to the registered URL, signed RSA-SHA256 with a leaf certificate whose
  subject has no organization and whose issuer, an intermediate of the sandbox CA, is O=Microsoft
  Corporation (as Microsoft's samples check), served with that intermediate (PEM) at
  `/cert/pcnotifications-dispatch.microsoft.com.cer` on the simulator; failed deliveries are retried (10 attempts in all, then the event goes offline).

Routes acting as Microsoft, under `/_sandbox/` (JSON bodies):

| route | what |
| --- | --- |
| `POST /_sandbox/tokens` `{"mfa": true}` | mint a refresh token for the Referrals admin user (`"mfa": false`: one whose tokens the API refuses with 900421) |
| `POST /_sandbox/tokens/revoke` `{"refresh_token": "..."}` or `{}` | revoke one refresh token, or all |
| `POST /_sandbox/referrals` `{...referral fields}` | a Microsoft seller sends an incoming referral (New/Received, expires in 14 days); `"engagementId"` puts it into an existing co-sell engagement (several referrals may share one) |
| `PATCH /_sandbox/referrals/{id}` `{...fields}` | a Microsoft seller updates a referral (deep merge; status changes still obey the state machine) |
| `POST /_sandbox/referrals/{id}/expire` | the referral expires now (Closed/Expired) |
| `POST /_sandbox/clock` `{"advance_seconds": 1209600}` | move the simulator's clock forward (expiry) |
| `POST /_sandbox/closed-referrals` `{"refuseEdits": true}` | stricter than the reference: refuse every PATCH/PUT of a closed referral (Closed → Closed and field edits alike), so a test proves the connector sends none |
| `POST /_sandbox/webhook-faults` `{"kind": "duplicate"|"delay"|"drop"|"reorder", "count": 1, "delay": 2}` | the next `count` events are delivered twice / late / never / in reverse order |
| `GET /_sandbox/deliveries` | every delivery attempt: event, URL, status, attempt number |
| `GET /_sandbox/state` | referrals and the registration, as stored |
| `POST /_sandbox/reset` | forget everything but the app's credentials |

HTTP faults (429 with Retry-After, 5xx, slow, reset) come from `sandbox/httpsim.py` at `/_sandbox/faults`.

Run alone: `python -m sandbox.partner_center --port 8443 --ca .sandbox/ca` prints the settings that point
the connector at it. In tests: `PartnerCenterSim(ca).start()` ... `.stop()`.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import heapq
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sandbox.ca import IssuedCert, SandboxCA
from sandbox.httpsim import HttpError, Request, Response, Router, SimServer

DEFAULT_TENANT = "00000000-0000-4000-8000-00000000c0de"
DEFAULT_CLIENT_ID = "11111111-1111-4111-8111-111111111111"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
REFERRALS_AUDIENCE = "https://api.partner.microsoft.com"
WEBHOOKS_AUDIENCE = "https://api.partnercenter.microsoft.com"
CERT_PATH = "/cert/pcnotifications-dispatch.microsoft.com.cer"
API_PREFIX = "/v1.0/engagements"
WEBHOOKS_PREFIX = "/webhooks/v1"
WEBHOOK_EVENTS = ["referral-created", "referral-updated", "related-referral-created", "related-referral-updated",
                  "test-created"]
INCOMING_EXPIRY = dt.timedelta(days=14)
OUTGOING_EXPIRY = dt.timedelta(days=90)
DEFAULT_PAGE_SIZE = 100
MICROSOFT_ORGANIZATION_ID = "72f988bf-86f1-41af-91ab-2d7cd011db47"
"""Microsoft's own tenant id: the organization that invites partners to Microsoft's referrals."""
MAX_PAGE_SIZE = 100
"""The reference caps a page at 100 referrals (follow nextLink past that): a larger `$top` is refused."""
NEXT_LINK_BASE = "http://api.partner.microsoft.com/v1.0"
"""Where the reference's nextLink examples point: not the engagements base the client was configured with."""
CLOSING_OFFSETS_HOURS = (-3, 1, 5.5, 10)
"""UTC offsets of the users whose local midnight the simulator writes as a closing date (Brazil, Central
Europe, India, Sydney): Partner Center stores a local midnight in UTC."""
PATCH_CONTENT_TYPES = ("application/json", "application/json-patch+json")
VALIDATION_EVENTS_PER_MINUTE = 2
DELIVERY_ATTEMPTS = 10
MFA_ERROR = {"error": {"code": "900421", "message": "Multi-factor authentication is required: the token's "
                                                    "sign-in carried no MFA claim (AADSTS900421)."}}

ALLOWED_SUBSTATUS = {
    "New": {"Pending", "Received"},
    "Active": {"Accepted"},
    "Closed": {"Won", "Lost", "Declined", "Expired"},
}
ALLOWED_TRANSITIONS = {"New": {"New", "Active", "Closed"}, "Active": {"Active", "Closed"}, "Closed": {"Closed"}}
"""As the reference lists them ("Update a referral", status and substatus transition states: Closed -> Closed
included, with one of its substatuses; `refuse_closed_edits` is the stricter switch)."""
READ_ONLY_PATHS = ("/id", "/eTag", "/createdDateTime", "/updatedDateTime", "/expirationDateTime",
                   "/engagementId", "/direction")
FILTER_FIELDS = {"status": "str", "substatus": "str", "updatedDateTime": "time", "createdDateTime": "time",
                 "engagementId": "str", "direction": "str"}
ORDER_FIELDS = ("createdDateTime", "updatedDateTime")
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ne|ge|gt|le|lt)\s+('(?:[^']|'')*'|[0-9T:.\-+Z]+)\s*$")


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse_time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HttpError:
    return HttpError(status, {"error": {"code": code, "message": message}}, headers)


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


@dataclass
class _Token:
    kind: str  # "app+user" | "app"
    audience: str
    mfa: bool
    expires_at: float


@dataclass
class _Delivery:
    """One event on its way to the registered URL."""

    event: dict[str, Any]
    correlation_id: str | None = None
    attempt: int = 0
    body: bytes = b""


@dataclass
class _WebhookFault:
    kind: str
    count: int = 1
    delay: float = 0.0


@dataclass
class _Validation:
    correlation_id: str
    callback_url: str
    results: list[dict[str, Any]] = field(default_factory=list)
    status: str = "pending"


class PartnerCenterSim:
    """The simulator: state, routes, and the delivery worker.

    Args:
        ca: the sandbox CA (TLS certificate and the webhook signing certificate come from it).
        port: 0 picks a free port.
        tenant_id, client_id, client_secret: the app registration the connector must present.
        token_lifetime: seconds an access token lives.
        delivery_delays: seconds before each delivery retry (the last repeats); small in tests.
        signer: the certificate deliveries are signed with (default: issued here by an intermediate whose
            subject is O=Microsoft Corporation; the leaf's own subject names no organization).
        secret_marker: appended to the client secret and put into every refresh and access token minted, so a
            test can look for it in logs and storage (tests/test_secrets_never_leak.py).
    """

    def __init__(self, ca: SandboxCA, *, port: int = 0, tenant_id: str = DEFAULT_TENANT,
                 client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET,
                 token_lifetime: int = 3600, delivery_delays: tuple[float, ...] = (1, 2, 5, 10, 30, 60),
                 signer: IssuedCert | None = None, secret_marker: str = "") -> None:
        self.ca = ca
        self.tenant_id, self.client_id, self.client_secret = tenant_id, client_id, client_secret + secret_marker
        self.secret_marker = secret_marker
        self.token_lifetime = token_lifetime
        self.delivery_delays = delivery_delays
        self.signer = signer or ca.issue_webhook_signer()
        self.hosted_certs: dict[str, bytes] = {CERT_PATH: self.signer.bundle_pem if self.signer.chain
                                               else self.signer.cert_der}
        self._incoming_numbers = itertools.count()
        self.create_status = 201
        """What `POST /referrals` answers: 201, or 200 as Microsoft's connector definition documents."""
        self._lock = threading.RLock()
        self._clock_offset = 0.0
        self._reset_state()
        router = Router()
        self._routes(router)
        self.server = SimServer(router, port=port, ssl_context=ca.server_ssl_context(("127.0.0.1", "localhost")))
        self._delivery_session = requests.Session()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._deliver_loop, name="pc-sim-deliveries", daemon=True)

    # ----------------------------------------------------------------------------------------- lifecycle
    def _reset_state(self) -> None:
        with self._lock:
            self.referrals: dict[str, dict[str, Any]] = {}
            self.refresh_tokens: dict[str, bool] = {}  # token -> mfa
            self.access_tokens: dict[str, _Token] = {}
            self.registration: dict[str, Any] | None = None
            self.deliveries: list[dict[str, Any]] = []
            self.validations: dict[str, _Validation] = {}
            self._validation_times: deque[float] = deque()
            self._webhook_faults: list[_WebhookFault] = []
            self._held: list[_Delivery] = []
            self._schedule: list[tuple[float, int, _Delivery]] = []
            self._sequence = itertools.count()
            self.token_requests = 0
            self.refuse_closed_edits = False
            """The reference allows Closed -> Closed and says nothing of field edits on a closed referral; when
            True, every PATCH/PUT of a closed referral is refused (400 ReferralClosed) and counted."""
            self.closed_edits_refused = 0
            self.certificate_requests = 0

    def start(self) -> PartnerCenterSim:
        self.server.start()
        self._worker.start()
        return self

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        self.server.stop()
        self._worker.join(timeout=5)
        self._delivery_session.close()

    def __enter__(self) -> PartnerCenterSim:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def webhooks_url(self) -> str:
        return self.url + WEBHOOKS_PREFIX

    @property
    def cert_url(self) -> str:
        return self.url + CERT_PATH

    def settings_env(self, refresh_token: str | None = None) -> dict[str, str]:
        """The connector's settings that point it at this simulator (a fresh MFA refresh token unless given)."""
        return {
            "PARTNER_CENTER_TENANT_ID": self.tenant_id,
            "PARTNER_CENTER_CLIENT_ID": self.client_id,
            "PARTNER_CENTER_CLIENT_SECRET": self.client_secret,
            "PARTNER_CENTER_REFRESH_TOKEN": refresh_token or self.mint_refresh_token(),
            "PARTNER_CENTER_API_URL": self.api_url,
            "PARTNER_CENTER_WEBHOOKS_URL": self.webhooks_url,
            "PARTNER_CENTER_AUTHORITY": self.url,
            "PARTNER_CENTER_WEBHOOK_CERT_HOSTS": "127.0.0.1",
            "PARTNER_CENTER_WEBHOOK_CA_BUNDLE": str(self.ca.ca_pem_path),
            "REQUESTS_CA_BUNDLE": str(self.ca.ca_pem_path),
        }

    def host_certificate(self, name: str, data: bytes) -> str:
        """Serve `data` at `/cert/{name}` on the simulator (tests host forged certificates); returns its URL."""
        path = f"/cert/{name}"
        with self._lock:
            self.hosted_certs[path] = data
        return self.url + path

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self._clock_offset)

    def advance_clock(self, seconds: float) -> None:
        with self._lock:
            self._clock_offset += seconds
        self._expire_due()

    # ---------------------------------------------------------------------------------------- tokens
    def mint_refresh_token(self, *, mfa: bool = True) -> str:
        token = "rt-" + self.secret_marker + secrets.token_urlsafe(24)
        with self._lock:
            self.refresh_tokens[token] = mfa
        return token

    def revoke_refresh_tokens(self, token: str | None = None) -> None:
        with self._lock:
            if token is None:
                self.refresh_tokens.clear()
            else:
                self.refresh_tokens.pop(token, None)

    def _issue_access(self, kind: str, audience: str, mfa: bool) -> str:
        """A JWT-shaped access token, as Entra issues: the claims a client may read (`amr` says whether the
        sign-in used MFA; app-only tokens have none), and a made-up signature (the simulator looks tokens up)."""
        now = int(time.time())
        claims: dict[str, Any] = {"aud": audience, "iss": f"https://sts.windows.net/{self.tenant_id}/",
                                  "tid": self.tenant_id, "appid": self.client_id, "iat": now, "nbf": now,
                                  "exp": now + self.token_lifetime, "ver": "1.0"}
        if kind == "app+user":
            claims.update(amr=["pwd", "mfa"] if mfa else ["pwd"], scp="user_impersonation",
                          upn="referrals.admin@partner.sandbox")

        def segment(value: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode("ascii")

        token = ".".join((segment({"typ": "JWT", "alg": "RS256"}), segment(claims),
                          self.secret_marker + secrets.token_urlsafe(32)))
        with self._lock:
            self.access_tokens[token] = _Token(kind, audience, mfa, time.time() + self.token_lifetime)
        return token

    def _authorize(self, request: Request, audience: str, *, app_only_ok: bool) -> _Token:
        header = request.header("authorization") or ""
        scheme, _, value = header.partition(" ")
        with self._lock:
            token = self.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.expires_at < time.time():
            raise _error(401, "InvalidToken", "The access token is missing, unknown or expired.",
                         {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if token.audience != audience:
            raise _error(401, "InvalidAudience", f"The token is not for {audience}.")
        if token.kind == "app" and not app_only_ok:
            raise _error(401, "AppOnlyNotSupported", "This API accepts App+User tokens only.")
        if token.kind == "app+user" and not token.mfa:
            raise HttpError(401, MFA_ERROR, {"WWW-Authenticate": 'Bearer error="insufficient_claims", error_codes="900421"'})
        return token

    def _token_endpoint(self, request: Request) -> Response:
        if request.params["tenant"] != self.tenant_id:
            return Response(400, {"error": "invalid_request", "error_codes": [90002],
                                  "error_description": f"AADSTS90002: Tenant '{request.params['tenant']}' not found."})
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8"), keep_blank_values=True).items()}
        with self._lock:
            self.token_requests += 1
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return Response(401, {"error": "invalid_client", "error_codes": [7000215],
                                  "error_description": "AADSTS7000215: Invalid client secret provided."})
        scopes = form.get("scope", "").split()
        grant = form.get("grant_type")
        if grant == "refresh_token":
            with self._lock:
                mfa = self.refresh_tokens.get(form.get("refresh_token", ""))
            if mfa is None:
                return Response(400, {"error": "invalid_grant", "error_codes": [70000],
                                      "error_description": "AADSTS70000: The refresh token is invalid or expired."})
            audience = self._audience(scopes)
            rotated = self.mint_refresh_token(mfa=mfa)
            return Response(200, {
                "token_type": "Bearer", "scope": " ".join(scopes), "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": self._issue_access("app+user", audience, mfa), "refresh_token": rotated,
            })
        if grant == "client_credentials":
            audience = self._audience(scopes)
            return Response(200, {"token_type": "Bearer", "expires_in": self.token_lifetime,
                                  "ext_expires_in": self.token_lifetime,
                                  "access_token": self._issue_access("app", audience, False)})
        return Response(400, {"error": "unsupported_grant_type", "error_codes": [70003],
                              "error_description": f"AADSTS70003: grant type {grant!r} is not supported here."})

    @staticmethod
    def _audience(scopes: list[str]) -> str:
        resources = [s.rsplit("/.default", 1)[0] for s in scopes if s.endswith("/.default")]
        if len(resources) != 1 or resources[0] not in (REFERRALS_AUDIENCE, WEBHOOKS_AUDIENCE):
            raise HttpError(400, {"error": "invalid_scope", "error_codes": [70011],
                                  "error_description": "AADSTS70011: one <resource>/.default scope is required."})
        return resources[0]

    def _openid_configuration(self, request: Request) -> Response:
        tenant = request.params["tenant"]
        if tenant != self.tenant_id:
            return Response(400, {"error": "invalid_tenant",
                                  "error_description": f"AADSTS90002: Tenant '{tenant}' not found."})
        base = f"{self.url}/{tenant}"
        return Response(200, {
            "issuer": f"{self.url}/{tenant}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        })

    # ------------------------------------------------------------------------------------- referrals
    def _stamp(self, referral: dict[str, Any], moment: dt.datetime) -> None:
        referral["updatedDateTime"] = _iso(moment)
        referral["eTag"] = f'"{uuid.uuid4()}"'

    def _expire_due(self) -> None:
        """Incoming referrals unanswered for 14 days become Closed/Expired (checked lazily, on each call)."""
        now = self.now()
        expired = []
        with self._lock:
            for referral in self.referrals.values():
                if (referral.get("direction") == "Incoming" and referral.get("status") == "New"
                        and referral.get("expirationDateTime")
                        and _parse_time(referral["expirationDateTime"]) <= now):
                    referral.update(status="Closed", substatus="Expired")
                    self._stamp(referral, now)
                    expired.append(referral["id"])
        for referral_id in expired:
            self.emit("referral-updated", referral_id)

    def _get(self, referral_id: str) -> dict[str, Any]:
        referral = self.referrals.get(referral_id)
        if referral is None:
            raise _error(404, "NotFound", f"Referral {referral_id} was not found.")
        return referral

    @staticmethod
    def _check_transition(before: dict[str, Any], after: dict[str, Any]) -> None:
        old, new = before.get("status"), after.get("status")
        substatus = after.get("substatus")
        if (old, before.get("substatus")) == (new, substatus):
            return
        if new not in ALLOWED_SUBSTATUS:
            raise _error(400, "InvalidStatus", f"status {new!r} is not one of New, Active, Closed.")
        if old in ALLOWED_TRANSITIONS and new not in ALLOWED_TRANSITIONS[old]:
            raise _error(400, "InvalidStatusTransition", f"A referral cannot move from {old} to {new}.")
        if substatus not in ALLOWED_SUBSTATUS[new]:
            raise _error(400, "InvalidSubstatus", f"substatus {substatus!r} is not allowed with status {new}.")
        if substatus in ("Declined", "Lost") and not (after.get("statusReason") or "").strip():
            raise _error(400, "StatusReasonRequired", f"statusReason is required when the substatus is {substatus}.")

    @staticmethod
    def _check_shape(referral: dict[str, Any]) -> None:
        if referral.get("type") not in ("Independent", "Shared"):
            raise _error(400, "InvalidType", "type must be Independent or Shared.")
        for name in ("customerProfile", "consent", "details"):
            if not isinstance(referral.get(name), dict):
                raise _error(400, "MissingField", f"{name} is required and must be an object.")
        value = referral["details"].get("dealValue")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _error(400, "InvalidField", "details.dealValue must be a number.")
        currency = referral["details"].get("currency")
        if currency is not None and not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
            raise _error(400, "InvalidField", "details.currency must be an ISO 4217 code.")
        for name in ("team", "target", "tags"):
            if name in referral and referral[name] is not None and not isinstance(referral[name], list):
                raise _error(400, "InvalidField", f"{name} must be an array.")

    def _parse_filter(self, text: str | None) -> list[Callable[[dict[str, Any]], bool]]:
        if not text:
            return []
        predicates = []
        for clause in re.split(r"\s+and\s+", text.strip()):
            match = _CLAUSE.match(clause)
            if not match or match.group(1) not in FILTER_FIELDS:
                raise _error(400, "InvalidFilter", f"Unsupported $filter clause: {clause!r}.")
            name, op, raw = match.groups()
            if FILTER_FIELDS[name] == "time":
                if raw.startswith("'"):
                    raise _error(400, "InvalidFilter", f"{name} compares with a date-time literal, not a string.")
                try:
                    value: Any = _parse_time(raw)
                except ValueError:
                    raise _error(400, "InvalidFilter", f"Not a date-time: {raw!r}.") from None
            else:
                if not raw.startswith("'") or op not in ("eq", "ne"):
                    raise _error(400, "InvalidFilter", f"{name} supports eq/ne with a quoted string only.")
                value = raw[1:-1].replace("''", "'")
            predicates.append(_predicate(name, op, value, FILTER_FIELDS[name] == "time"))
        return predicates

    def _list(self, request: Request) -> Response:
        self._authorize(request, REFERRALS_AUDIENCE, app_only_ok=False)
        self._expire_due()
        unknown = [k for k in request.query if k.startswith("$") and k not in ("$filter", "$orderby", "$top", "$skiptoken")]
        if unknown:
            raise _error(400, "InvalidQuery", f"Unsupported query option(s): {', '.join(unknown)}.")
        filter_text, order_text = request.arg("$filter"), request.arg("$orderby")
        predicates = self._parse_filter(filter_text)
        order_field, descending = "createdDateTime", False
        if order_text:
            parts = order_text.split()
            if parts[0] not in ORDER_FIELDS or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
                raise _error(400, "InvalidOrderBy", f"$orderby supports {' or '.join(ORDER_FIELDS)} asc|desc.")
            order_field, descending = parts[0], len(parts) == 2 and parts[1] == "desc"
        top_text = request.arg("$top")
        try:
            top = int(top_text) if top_text is not None else DEFAULT_PAGE_SIZE
        except ValueError:
            raise _error(400, "InvalidTop", "$top must be an integer.") from None
        if not 1 <= top <= MAX_PAGE_SIZE:
            raise _error(400, "InvalidTop", f"$top must be between 1 and {MAX_PAGE_SIZE}.")
        query_key = json.dumps([filter_text, order_text, top])
        offset = 0
        if request.arg("$skiptoken") is not None:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.arg("$skiptoken") + "=="))
                offset, key = int(token["o"]), token["q"]
            except (ValueError, KeyError, TypeError):
                raise _error(400, "InvalidSkipToken", "The $skiptoken is malformed.") from None
            if key != query_key:
                raise _error(400, "InvalidSkipToken", "The $skiptoken belongs to another query.")
        with self._lock:  # filter and sort the stored referrals; copy only the page (a copy of all is O(n) a page)
            matching = [r for r in self.referrals.values() if all(p(r) for p in predicates)]
            matching.sort(key=lambda r: (r[order_field], r["id"]), reverse=descending)
            page = [copy.deepcopy(r) for r in matching[offset:offset + top]]
        body: dict[str, Any] = {"value": page}
        if offset + top < len(matching):
            skiptoken = base64.urlsafe_b64encode(json.dumps({"o": offset + top, "q": query_key}).encode()).decode().rstrip("=")
            query = [(name, value) for name, value in (("$filter", filter_text), ("$orderby", order_text),
                                                       ("$top", str(top))) if value]
            query.append(("$skiptoken", skiptoken))
            body["@odata.nextLink"] = f"{NEXT_LINK_BASE}/referrals?" + "&".join(
                f"{name}={quote(value, safe=chr(39) + ':,()')}" for name, value in query)
        return Response(200, body)

    def _read(self, request: Request) -> Response:
        self._authorize(request, REFERRALS_AUDIENCE, app_only_ok=False)
        self._expire_due()
        with self._lock:
            referral = copy.deepcopy(self._get(request.params["id"]))
        return Response(200, referral, {"ETag": referral["eTag"]})

    def _create(self, request: Request) -> Response:
        self._authorize(request, REFERRALS_AUDIENCE, app_only_ok=False)
        body = request.json()
        if not isinstance(body, dict):
            raise _error(400, "InvalidBody", "The body must be a referral object.")
        self._check_shape(body)
        status = body.get("status") or "New"
        substatus = body.get("substatus") or ("Pending" if status == "New" else None)
        if status not in ALLOWED_SUBSTATUS or substatus not in ALLOWED_SUBSTATUS[status] or status == "Closed":
            raise _error(400, "InvalidStatus", f"A referral cannot be created as {status}/{substatus}.")
        now = self.now()
        # As the reference's example: posted New/Pending, the partner's own referral comes back already
        # Active/Accepted, with no expiry.
        referral = {**copy.deepcopy(body), "id": str(uuid.uuid4()), "engagementId": str(uuid.uuid4()),
                    "status": "Active", "substatus": "Accepted", "direction": "Outgoing",
                    "createdDateTime": _iso(now), "expirationDateTime": None}
        referral.setdefault("qualification", "None")
        self._stamp(referral, now)
        with self._lock:
            self.referrals[referral["id"]] = referral
            result = copy.deepcopy(referral)
        self.emit("referral-created", referral["id"])
        return Response(self.create_status, result, {"ETag": result["eTag"],
                                                     "Location": f"{self.api_url}/referrals/{result['id']}"})

    def _patch(self, request: Request) -> Response:
        self._authorize(request, REFERRALS_AUDIENCE, app_only_ok=False)
        self._expire_due()
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type not in PATCH_CONTENT_TYPES:
            raise _error(415, "UnsupportedMediaType", "PATCH takes a JSON Patch array as application/json.")
        operations = request.json()
        if not isinstance(operations, list) or not operations:
            raise _error(400, "InvalidPatch", "The body must be a non-empty JSON Patch array.")
        with self._lock:
            current = self._get(request.params["id"])
            self._check_if_match(request, current)
            self._check_open(current)
            updated = copy.deepcopy(current)
            for operation in operations:
                _apply_operation(updated, operation)
            self._check_shape(updated)
            self._check_transition(current, updated)
            self._stamp(updated, self.now())
            self.referrals[updated["id"]] = updated
            result = copy.deepcopy(updated)
        self.emit("referral-updated", result["id"])
        if "return=representation" in (request.header("prefer") or ""):
            return Response(200, result, {"ETag": result["eTag"]})
        return Response(204, None, {"ETag": result["eTag"]})

    def _put(self, request: Request) -> Response:
        self._authorize(request, REFERRALS_AUDIENCE, app_only_ok=False)
        self._expire_due()
        body = request.json()
        if not isinstance(body, dict):
            raise _error(400, "InvalidBody", "The body must be a referral object.")
        with self._lock:
            current = self._get(request.params["id"])
            self._check_if_match(request, current)
            self._check_open(current)
            updated = {**copy.deepcopy(body), **{k: current[k] for k in ("id", "engagementId", "createdDateTime",
                                                                          "expirationDateTime", "direction")}}
            self._check_shape(updated)
            self._check_transition(current, updated)
            self._stamp(updated, self.now())
            self.referrals[updated["id"]] = updated
            result = copy.deepcopy(updated)
        self.emit("referral-updated", result["id"])
        return Response(200, result, {"ETag": result["eTag"]})

    def _check_open(self, current: dict[str, Any]) -> None:
        if self.refuse_closed_edits and current.get("status") == "Closed":
            self.closed_edits_refused += 1
            raise _error(400, "ReferralClosed", "The referral is closed and takes no further change.")

    @staticmethod
    def _check_if_match(request: Request, current: dict[str, Any]) -> None:
        if_match = request.header("if-match")
        if if_match is not None and if_match.strip() not in ("*", current["eTag"]):
            raise _error(412, "PreconditionFailed", "The referral was changed since it was read (ETag mismatch).")

    # ------------------------------------------------------------------------- acting as Microsoft
    def create_incoming(self, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """A Microsoft seller shares a referral with the partner (New/Received, 14 days to answer).

        `fields["engagementId"]` joins an engagement that already holds referrals ("Multiple referrals can be
        associated to a single EngagementID", Partner Center's referral resources); without it, a new one.
        """
        engagement = (fields or {}).get("engagementId")
        if engagement is not None and not (isinstance(engagement, str) and engagement.strip()):
            raise _error(400, "InvalidField", "engagementId must be a non-empty string.")
        now = self.now()
        number = next(self._incoming_numbers)
        offset = dt.timedelta(hours=CLOSING_OFFSETS_HOURS[number % len(CLOSING_OFFSETS_HOURS)])
        closing = dt.datetime.combine(now.date() + dt.timedelta(days=90), dt.time(), dt.timezone.utc) - offset
        referral: dict[str, Any] = {
            "id": str(uuid.uuid4()), "engagementId": str(uuid.uuid4()), "name": "Sandbox customer - new referral",
            "externalReferenceId": None, "createdDateTime": _iso(now), "expirationDateTime": _iso(now + INCOMING_EXPIRY),
            "status": "New", "substatus": "Received", "statusReason": None, "type": "Shared",
            "qualification": "SalesQualified", "direction": "Incoming",
            "customerProfile": {"name": "Sandbox Customer Ltd",
                                "address": {"addressLine1": None, "addressLine2": None, "city": "Seattle", "state": "WA",
                                            "postalCode": "98101", "country": "US", "region": None},
                                "size": None, "team": [], "ids": []},
            "consent": {"consentToShareReferralWithMicrosoftSellers": True, "consentToContact": True,
                        "consentToToShareInfoWithOthers": True},
            "details": {"notes": None, "dealValue": 10000, "currency": "USD",
                        "closingDateTime": closing.strftime("%Y-%m-%dT%H:%M:%SZ"),  # a local midnight, in UTC
                        "requirements": {"industries": [{"id": "Retail"}], "products": [], "services": [],
                                         "solutions": []}},
            "team": [], "inviteContext": {"notes": None, "invitedBy": {"organizationId": MICROSOFT_ORGANIZATION_ID,
                                                                       "organizationName": "Microsoft"},
                                          "assistanceRequestCode": None},
            "target": [], "tags": [],
        }
        _deep_merge(referral, {k: v for k, v in (fields or {}).items() if k not in ("id", "eTag", "updatedDateTime")})
        for member in (referral.get("customerProfile") or {}).get("team") or []:
            if isinstance(member, dict):  # the documented shape, unless the caller gave one
                member.setdefault("contactPreference", {"locale": "en-US", "disableNotifications": False})
        self._check_shape(referral)
        self._stamp(referral, now)
        with self._lock:
            self.referrals[referral["id"]] = referral
            result = copy.deepcopy(referral)
        self.emit("referral-created", referral["id"])
        return result

    def update_as_microsoft(self, referral_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """A Microsoft seller edits a referral (deep merge); status changes obey the state machine."""
        with self._lock:
            current = self._get(referral_id)
            updated = copy.deepcopy(current)
            _deep_merge(updated, {k: v for k, v in fields.items() if k not in ("id", "eTag", "updatedDateTime")})
            self._check_shape(updated)
            self._check_transition(current, updated)
            self._stamp(updated, self.now())
            self.referrals[referral_id] = updated
            result = copy.deepcopy(updated)
        self.emit("referral-updated", referral_id)
        return result

    def expire(self, referral_id: str) -> dict[str, Any]:
        """The referral's time runs out now (Closed/Expired), from New or Active."""
        with self._lock:
            referral = self._get(referral_id)
            if referral.get("status") == "Closed":
                raise _error(400, "InvalidStatusTransition", "A closed referral cannot expire.")
            referral.update(status="Closed", substatus="Expired", expirationDateTime=_iso(self.now()))
            self._stamp(referral, self.now())
            result = copy.deepcopy(referral)
        self.emit("referral-updated", referral_id)
        return result

    # --------------------------------------------------------------------------------- registration
    def _registration(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        with self._lock:
            if self.registration is None:
                raise _error(404, "RegistrationNotFound", "No webhook registration exists for this partner.")
            return Response(200, copy.deepcopy(self.registration))

    def _validate_registration(self, body: Any) -> tuple[str, list[str]]:
        if not isinstance(body, dict):
            raise _error(400, "InvalidBody", "The body must be {WebhookUrl, WebhookEvents}.")
        url, events = body.get("WebhookUrl"), body.get("WebhookEvents")
        if not isinstance(url, str) or not (url.startswith("https://") or (url.startswith("http://") and _is_loopback(url))):
            raise _error(400, "InvalidWebhookUrl", "WebhookUrl must be an https:// URL.")
        if not isinstance(events, list) or not events or any(e not in WEBHOOK_EVENTS for e in events):
            raise _error(400, "InvalidWebhookEvents", f"WebhookEvents must be a non-empty subset of {WEBHOOK_EVENTS}.")
        return url, list(dict.fromkeys(events))

    def _register(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        url, events = self._validate_registration(request.json())
        with self._lock:  # one URL per event for the whole tenant: registering again replaces
            self.registration = {"SubscriberId": self.tenant_id, "WebhookUrl": url, "WebhookEvents": events}
            return Response(200, copy.deepcopy(self.registration))

    def _update_registration(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        url, events = self._validate_registration(request.json())
        with self._lock:
            if self.registration is None:
                raise _error(404, "RegistrationNotFound", "No webhook registration exists to update.")
            self.registration.update(WebhookUrl=url, WebhookEvents=events)
            return Response(200, copy.deepcopy(self.registration))

    def _events(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        return Response(200, list(WEBHOOK_EVENTS))

    def _send_validation(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        now = time.monotonic()
        with self._lock:
            while self._validation_times and now - self._validation_times[0] >= 60:
                self._validation_times.popleft()
            if len(self._validation_times) >= VALIDATION_EVENTS_PER_MINUTE:
                wait = int(60 - (now - self._validation_times[0])) + 1
                raise _error(429, "TooManyRequests", "At most 2 validation events a minute.", {"Retry-After": str(wait)})
            if self.registration is None or "test-created" not in self.registration["WebhookEvents"]:
                raise _error(400, "NotSubscribed", "Register a webhook subscribed to test-created first.")
            self._validation_times.append(now)
            correlation_id = str(uuid.uuid4())
            self.validations[correlation_id] = _Validation(correlation_id, self.registration["WebhookUrl"])
        event = self._event("test-created", f"{self.webhooks_url}/registration/validationEvents/{correlation_id}", "test")
        self._enqueue(_Delivery(event, correlation_id))
        return Response(200, {"correlationId": correlation_id})

    def _validation_status(self, request: Request) -> Response:
        self._authorize(request, WEBHOOKS_AUDIENCE, app_only_ok=True)
        with self._lock:
            validation = self.validations.get(request.params["cid"])
            if validation is None:
                raise _error(404, "NotFound", "No validation event with that correlation id.")
            return Response(200, {"correlationId": validation.correlation_id, "partnerId": self.tenant_id,
                                  "status": validation.status, "callbackUrl": validation.callback_url,
                                  "results": list(validation.results)})

    # ------------------------------------------------------------------------------------ deliveries
    def _event(self, name: str, resource_uri: str, resource_name: str) -> dict[str, Any]:
        return {"EventName": name, "ResourceUri": resource_uri, "ResourceName": resource_name, "AuditUri": None,
                "ResourceChangeUtcDate": _iso(self.now())}

    def emit(self, name: str, referral_id: str) -> None:
        """Send a referral event to the registered URL, if it is subscribed to `name`."""
        event = self._event(name, f"{self.url}/engagements/v1/referrals/{referral_id}", "referral")
        self._enqueue(_Delivery(event))

    def _enqueue(self, delivery: _Delivery) -> None:
        with self._lock:
            fault = self._webhook_faults[0] if self._webhook_faults and delivery.correlation_id is None else None
            if fault is not None:
                fault.count -= 1
                if fault.count == 0:
                    self._webhook_faults.pop(0)
            deliveries = [delivery]
            due = time.monotonic()
            if fault is not None and fault.kind == "drop":
                self.deliveries.append({"event": delivery.event, "url": None, "status": "dropped", "attempt": 0})
                return
            if fault is not None and fault.kind == "duplicate":
                deliveries.append(_Delivery(copy.deepcopy(delivery.event)))
            if fault is not None and fault.kind == "delay":
                due += fault.delay
            if fault is not None and fault.kind == "reorder":
                self._held.append(delivery)
                if fault.count > 0:
                    return
                deliveries, self._held = list(reversed(self._held)), []
            for index, item in enumerate(deliveries):  # a little apart, so each arrives in this order
                heapq.heappush(self._schedule, (due + 0.1 * index, next(self._sequence), item))
        with self._wakeup:
            self._wakeup.notify_all()

    def add_webhook_fault(self, kind: str, *, count: int = 1, delay: float = 0.0) -> None:
        if kind not in ("duplicate", "delay", "drop", "reorder") or count < 1:
            raise _error(400, "BadFault", "kind is duplicate, delay, drop or reorder; count >= 1.")
        with self._lock:
            self._webhook_faults.append(_WebhookFault(kind, count, delay))

    def _deliver_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping:
                    with self._lock:
                        head = self._schedule[0][0] if self._schedule else None
                    if head is not None and head <= time.monotonic():
                        break
                    self._wakeup.wait(timeout=None if head is None else max(0.0, head - time.monotonic()))
                if self._stopping:
                    return
            with self._lock:
                _, _, delivery = heapq.heappop(self._schedule)
            threading.Thread(target=self._attempt, args=(delivery,), daemon=True).start()

    def _attempt(self, delivery: _Delivery) -> None:
        with self._lock:
            registration = copy.deepcopy(self.registration)
        if registration is None or delivery.event["EventName"] not in registration["WebhookEvents"]:
            return
        url = registration["WebhookUrl"]
        delivery.attempt += 1
        if not delivery.body:
            delivery.body = json.dumps(delivery.event, separators=(",", ":")).encode("utf-8")
        signature = self.signer.key.sign(delivery.body, padding.PKCS1v15(), hashes.SHA256())
        headers = {"Content-Type": "application/json", "Authorization": "Signature " + base64.b64encode(signature).decode(),
                   "X-MS-Certificate-Url": self.cert_url, "X-MS-Signature-Algorithm": "rsa-sha256"}
        try:
            # verify= per call: a session's own `verify` loses to REQUESTS_CA_BUNDLE from the environment.
            response = self._delivery_session.post(url, data=delivery.body, headers=headers, timeout=(3, 10),
                                                   allow_redirects=False, verify=str(self.ca.ca_pem_path))
            status: int | str = response.status_code
            ok = 200 <= response.status_code < 300
            message = response.reason or ""
        except requests.RequestException as exc:
            status, ok, message = "unreachable", False, type(exc).__name__
        with self._lock:
            self.deliveries.append({"event": delivery.event, "url": url.split("?")[0], "status": status,
                                    "attempt": delivery.attempt})
            validation = self.validations.get(delivery.correlation_id or "")
            if validation is not None:
                validation.results.append({"responseCode": "OK" if ok else str(status), "responseMessage": message,
                                           "systemError": not isinstance(status, int),
                                           "dateTimeUtc": _iso(self.now())[:-1]})
                validation.status = "completed" if ok or delivery.attempt >= DELIVERY_ATTEMPTS else "retrying"
            if ok or delivery.attempt >= DELIVERY_ATTEMPTS:
                return
            wait = self.delivery_delays[min(delivery.attempt - 1, len(self.delivery_delays) - 1)]
            heapq.heappush(self._schedule, (time.monotonic() + wait, next(self._sequence), delivery))
        with self._wakeup:
            self._wakeup.notify_all()

    def pending_deliveries(self) -> int:
        """Webhook deliveries scheduled and not yet attempted (tests wait for quiet before a fault)."""
        with self._lock:
            return len(self._schedule)

    def wait_for_deliveries(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until `predicate(deliveries)` holds; returns the delivery log (tests)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                log = copy.deepcopy(self.deliveries)
            if predicate(log):
                return log
            if time.monotonic() > deadline:
                raise TimeoutError(f"deliveries did not reach the expected state: {log[-5:]}")
            time.sleep(0.05)

    # ----------------------------------------------------------------------------------------- routes
    def _routes(self, router: Router) -> None:
        def route(method: str, template: str) -> Callable[[Callable[[Request], Response]], Callable[[Request], Response]]:
            """Register a handler whose every answer, errors included, carries a `request-id`."""
            def register(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
                def wrapped(request: Request) -> Response:
                    try:
                        response = handler(request)
                    except HttpError as exc:
                        response = exc.response
                    response.headers.setdefault("request-id", str(uuid.uuid4()))
                    return response
                return router.route(method, template)(wrapped)
            return register

        route("GET", "/{tenant}/v2.0/.well-known/openid-configuration")(self._openid_configuration)
        route("POST", "/{tenant}/oauth2/v2.0/token")(self._token_endpoint)
        route("GET", API_PREFIX + "/referrals")(self._list)
        route("POST", API_PREFIX + "/referrals")(self._create)
        route("GET", API_PREFIX + "/referrals/{id}")(self._read)
        route("PATCH", API_PREFIX + "/referrals/{id}")(self._patch)
        route("PUT", API_PREFIX + "/referrals/{id}")(self._put)
        route("GET", WEBHOOKS_PREFIX + "/registration")(self._registration)
        route("POST", WEBHOOKS_PREFIX + "/registration")(self._register)
        route("PUT", WEBHOOKS_PREFIX + "/registration")(self._update_registration)
        route("GET", WEBHOOKS_PREFIX + "/registration/events")(self._events)
        route("POST", WEBHOOKS_PREFIX + "/registration/validationEvents")(self._send_validation)
        route("GET", WEBHOOKS_PREFIX + "/registration/validationEvents/{cid}")(self._validation_status)

        @route("GET", "/cert/{name}")
        def certificate(request: Request) -> Response:
            with self._lock:
                self.certificate_requests += 1  # a receiver's cache is seen from here: one fetch per burst
            data = self.hosted_certs.get(request.path)
            if data is None:
                raise _error(404, "NotFound", "No such certificate.")
            return Response(200, data, {"Content-Type": "application/pkix-cert"})

        @route("POST", "/_sandbox/tokens")
        def mint(request: Request) -> Response:
            body = request.json() or {}
            return Response(201, {"refresh_token": self.mint_refresh_token(mfa=bool(body.get("mfa", True)))})

        @route("POST", "/_sandbox/tokens/revoke")
        def revoke(request: Request) -> Response:
            self.revoke_refresh_tokens((request.json() or {}).get("refresh_token"))
            return Response(204)

        @route("POST", "/_sandbox/referrals")
        def incoming(request: Request) -> Response:
            return Response(201, self.create_incoming(request.json() or {}))

        @route("PATCH", "/_sandbox/referrals/{id}")
        def as_microsoft(request: Request) -> Response:
            return Response(200, self.update_as_microsoft(request.params["id"], request.json() or {}))

        @route("POST", "/_sandbox/referrals/{id}/expire")
        def expire(request: Request) -> Response:
            return Response(200, self.expire(request.params["id"]))

        @route("POST", "/_sandbox/clock")
        def clock(request: Request) -> Response:
            self.advance_clock(float((request.json() or {}).get("advance_seconds", 0)))
            return Response(200, {"now": _iso(self.now())})

        @route("POST", "/_sandbox/closed-referrals")
        def closed_referrals(request: Request) -> Response:
            self.refuse_closed_edits = bool((request.json() or {}).get("refuseEdits", True))
            return Response(200, {"refuseEdits": self.refuse_closed_edits, "refused": self.closed_edits_refused})

        @route("POST", "/_sandbox/webhook-faults")
        def webhook_fault(request: Request) -> Response:
            body = request.json() or {}
            self.add_webhook_fault(str(body.get("kind")), count=int(body.get("count", 1)),
                                   delay=float(body.get("delay", 0)))
            return Response(201, body)

        @route("DELETE", "/_sandbox/webhook-faults")
        def clear_webhook_faults(_: Request) -> Response:
            with self._lock:
                self._webhook_faults.clear()
            return Response(204)

        @route("GET", "/_sandbox/deliveries")
        def deliveries(_: Request) -> Response:
            with self._lock:
                return Response(200, {"deliveries": copy.deepcopy(self.deliveries)})

        @route("GET", "/_sandbox/state")
        def state(_: Request) -> Response:
            with self._lock:
                return Response(200, {"referrals": list(copy.deepcopy(self.referrals).values()),
                                      "registration": copy.deepcopy(self.registration), "now": _iso(self.now())})

        @route("POST", "/_sandbox/reset")
        def reset(_: Request) -> Response:
            self._reset_state()
            return Response(204)


def _predicate(name: str, op: str, value: Any, is_time: bool) -> Callable[[dict[str, Any]], bool]:
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "ge": lambda a, b: a >= b,
        "gt": lambda a, b: a > b, "le": lambda a, b: a <= b, "lt": lambda a, b: a < b,
    }

    def check(referral: dict[str, Any]) -> bool:
        actual: Any = referral.get(name)
        if actual is None:
            return op == "ne"
        return compare[op](_parse_time(actual) if is_time else actual, value)

    return check


def _pointer(path: str) -> list[str]:
    if not path.startswith("/") or path in READ_ONLY_PATHS or any(path.startswith(p + "/") for p in READ_ONLY_PATHS):
        raise _error(400, "InvalidPatchPath", f"The path {path!r} cannot be changed.")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_operation(document: dict[str, Any], operation: Any) -> None:
    """Apply one JSON Patch `replace`/`add` (RFC 6902 semantics for objects and arrays)."""
    if not isinstance(operation, dict) or operation.get("op") not in ("replace", "add") or "value" not in operation:
        raise _error(400, "InvalidPatchOperation", "Only replace and add operations with a value are supported.")
    parts = _pointer(str(operation.get("path", "")))
    target: Any = document
    for part in parts[:-1]:
        try:
            target = target[int(part)] if isinstance(target, list) else target[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _error(400, "InvalidPatchPath", f"The path {operation['path']!r} does not exist.") from None
        if target is None:
            raise _error(400, "InvalidPatchPath", f"The path {operation['path']!r} goes through null.")
    last, value = parts[-1], copy.deepcopy(operation["value"])
    if isinstance(target, list):
        if last == "-" and operation["op"] == "add":
            target.append(value)
            return
        try:
            index = int(last)
        except ValueError:
            raise _error(400, "InvalidPatchPath", f"{last!r} is not an array index.") from None
        if operation["op"] == "add" and 0 <= index <= len(target):
            target.insert(index, value)
        elif operation["op"] == "replace" and 0 <= index < len(target):
            target[index] = value
        else:
            raise _error(400, "InvalidPatchPath", f"Index {index} is out of range.")
    elif isinstance(target, dict):
        if operation["op"] == "replace" and last not in target:
            raise _error(400, "InvalidPatchPath", f"replace needs an existing member: {operation['path']!r}.")
        target[last] = value
    else:
        raise _error(400, "InvalidPatchPath", f"The path {operation['path']!r} does not name a member.")


def _deep_merge(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.partner_center",
                                     description="The Partner Center simulator (HTTPS, sandbox CA).")
    parser.add_argument("--port", type=int, default=8443, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--ca", default=".sandbox/ca", help="folder of the sandbox CA (created if missing)")
    parser.add_argument("--delivery-delays", default="1,2,5,10,30,60",
                        help="seconds between webhook delivery retries, comma-separated")
    args = parser.parse_args(argv)
    delays = tuple(float(d) for d in args.delivery_delays.split(",") if d.strip())
    sim = PartnerCenterSim(SandboxCA.load_or_create(args.ca), port=args.port, delivery_delays=delays)
    sim._worker.start()
    print(f"Partner Center simulator listening on {sim.url}", flush=True)
    print("Settings for the connector:", flush=True)
    for name, value in sim.settings_env().items():
        print(f"  {name}={value}", flush=True)
    try:
        sim.server.serve_forever()
    finally:
        with sim._wakeup:
            sim._stopping = True
            sim._wakeup.notify_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
