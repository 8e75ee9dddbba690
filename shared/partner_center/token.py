"""Bearer tokens for Partner Center through MSAL, with the refresh token kept fresh and its health visible.

Why this shape:

- Referrals accept App+User tokens only. Unattended, that is the Secure Application Model: the app's
  credentials plus a long-lived refresh token of a Referrals-admin user, redeemed with MSAL's
  `acquire_token_by_refresh_token`. Entra rotates refresh tokens and lets one unused for 90 days expire,
  so the newest one returned is persisted (`store.secrets`) and read back before each refresh: another
  function instance may have rotated it meanwhile. A new value put in `PARTNER_CENTER_REFRESH_TOKEN` (after
  a re-consent) wins over the stored one, recognised by a fingerprint of the setting.
- The webhook registration API accepts app-only tokens: client credentials, nothing to persist.
- MSAL gets `http_client=` the connector's `requests.Session`, so `REQUESTS_CA_BUNDLE` applies, and
  `instance_discovery=False` for an authority that is not Microsoft's (the sandbox), else MSAL would ask
  login.microsoftonline.com to vouch for it.
- Access tokens are cached until shortly before expiry; the transport drops one the API refuses.
- Token health (last successful refresh, age of the refresh token, a warning well before day 90, the last
  error) is written to `store.status` for the status page. Never a token: not in logs, errors or status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import msal
import requests
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS

from shared.errors import AuthExpired, ConfigError, Conflict, ConnectorError, MfaRequired, Unavailable
from shared.models.records import StatusDoc
from shared.partner_center.transport import MFA_ERROR_CODE, MFA_MESSAGE
from shared.telemetry import log_token

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger("shared.partner_center")

REFERRALS_SCOPE = "https://api.partner.microsoft.com/.default"
WEBHOOKS_SCOPE = "https://api.partnercenter.microsoft.com/.default"
REFRESH_TOKEN_SECRET = "partner-center-refresh-token"
SEED_FINGERPRINT_SECRET = "partner-center-refresh-token-seed"
TOKEN_STATUS = "partner-center-token"
REFRESH_TOKEN_LIFETIME_DAYS = 90
WARN_AFTER_DAYS = 60
"""Warn a month before Entra's 90-day inactivity expiry: time for a person to re-consent calmly."""
EXPIRY_SKEW_SECONDS = 300
"""Renew an access token this long before it expires, so no call goes out with a dying token."""


class SecretKeeper(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, value: str) -> None: ...


class StatusKeeper(Protocol):
    def get(self, key: str) -> StatusDoc | None: ...

    def put(self, record: StatusDoc) -> StatusDoc: ...


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def fingerprint(secret: str) -> str:
    """A short one-way fingerprint: tells two tokens apart without keeping or showing either."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


def build_msal_app(settings: Settings, session: requests.Session) -> msal.ConfidentialClientApplication:
    """The MSAL confidential client for the partner tenant, routed through `session`."""
    tenant = settings.require("partner_center_tenant_id")
    authority = f"{settings.partner_center_authority}/{tenant}"
    known = urlsplit(settings.partner_center_authority).hostname in WELL_KNOWN_AUTHORITY_HOSTS
    try:
        return msal.ConfidentialClientApplication(
            settings.require("partner_center_client_id"),
            client_credential=settings.require("partner_center_client_secret"),
            authority=authority,
            http_client=session,
            instance_discovery=known,
        )
    except ValueError as exc:  # MSAL validates the authority by reading its discovery document
        raise ConfigError(f"PARTNER_CENTER_AUTHORITY {authority} is not usable: {str(exc)[:200]}") from None
    except requests.RequestException as exc:
        raise Unavailable(f"the token authority {authority} could not be reached: {type(exc).__name__}") from None


def _raise_for_token_error(result: dict[str, Any], what: str) -> None:
    codes = [str(code) for code in result.get("error_codes") or []]
    description = str(result.get("error_description") or "")
    if MFA_ERROR_CODE in codes or MFA_ERROR_CODE in description:
        raise MfaRequired(MFA_MESSAGE)
    error = str(result.get("error") or "unknown_error")
    summary = description.splitlines()[0][:200] if description else ""
    if error in ("invalid_grant", "interaction_required", "invalid_client", "unauthorized_client"):
        raise AuthExpired(
            f"{what} was refused by the token authority ({error}: {summary}): sign in again as the Referrals "
            "admin user with MFA, put the new refresh token in PARTNER_CENTER_REFRESH_TOKEN, and check the app's "
            "client id and secret"
        )
    if error in ("temporarily_unavailable", "server_error"):
        raise Unavailable(f"{what} failed at the token authority ({error}): retry later")
    raise AuthExpired(f"{what} failed ({error}: {summary})")


class _CachedToken:
    """An access token held until shortly before expiry; thread-safe; one refresh at a time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self, acquire: Callable[[], dict[str, Any]]) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - EXPIRY_SKEW_SECONDS:
                result = acquire()
                self._token = str(result["access_token"])
                self._expires_at = self._clock() + float(result.get("expires_in") or 3600)
            return self._token

    def clear(self) -> None:
        with self._lock:
            self._token = None


class AppOnlyToken:
    """App-only tokens (client credentials) for the webhook registration API."""

    def __init__(self, app_factory: Callable[[], msal.ConfidentialClientApplication], *,
                 scope: str = WEBHOOKS_SCOPE, clock: Callable[[], float] = time.time) -> None:
        self._app_factory = app_factory
        self._app: msal.ConfidentialClientApplication | None = None
        self._scope = scope
        self._cache = _CachedToken(clock)

    @classmethod
    def from_settings(cls, settings: Settings, session: requests.Session) -> AppOnlyToken:
        return cls(lambda: build_msal_app(settings, session))

    def token(self) -> str:
        return self._cache.get(self._acquire)

    def invalidate(self) -> None:
        self._cache.clear()

    def _acquire(self) -> dict[str, Any]:
        if self._app is None:
            self._app = self._app_factory()
        try:
            result = self._app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as exc:
            raise Unavailable(f"the token authority could not be reached: {type(exc).__name__}") from None
        if "access_token" not in result:
            _raise_for_token_error(result, "the app-only token request")
        return result


class RefreshTokenCredential:
    """App+User tokens for the referrals API from the Secure Application Model refresh token.

    Args:
        app_factory: builds the MSAL client (lazily: building it reads the discovery document).
        secrets: where the newest refresh token is kept.
        status: where token health is written for the status page (best effort).
        seed_refresh_token: `PARTNER_CENTER_REFRESH_TOKEN`, the operator's consented token.
        scope: the API scope.
        clock: injectable for tests.
    """

    def __init__(self, app_factory: Callable[[], msal.ConfidentialClientApplication], *,
                 secrets: SecretKeeper, status: StatusKeeper | None, seed_refresh_token: str | None,
                 scope: str = REFERRALS_SCOPE, clock: Callable[[], float] = time.time) -> None:
        self._app_factory = app_factory
        self._app: msal.ConfidentialClientApplication | None = None
        self._secrets = secrets
        self._status = status
        self._seed = seed_refresh_token
        self._scope = scope
        self._cache = _CachedToken(clock)

    @classmethod
    def from_settings(cls, settings: Settings, session: requests.Session, *, secrets: SecretKeeper,
                      status: StatusKeeper | None) -> RefreshTokenCredential:
        seed = settings.partner_center_refresh_token
        return cls(lambda: build_msal_app(settings, session), secrets=secrets, status=status,
                   seed_refresh_token=seed.get_secret_value() if seed else None)

    def token(self) -> str:
        return self._cache.get(self._acquire)

    def invalidate(self) -> None:
        self._cache.clear()

    def current_refresh_token(self) -> tuple[str, str]:
        """The refresh token to redeem and where it came from ("store" or "setting").

        The stored token is the newest, unless the setting holds a token the stored one does not descend
        from: then a person re-consented, and the setting wins.
        """
        stored = self._secrets.get(REFRESH_TOKEN_SECRET)
        if self._seed:
            seed_print = fingerprint(self._seed)
            if stored and self._secrets.get(SEED_FINGERPRINT_SECRET) == seed_print:
                return stored, "store"
            return self._seed, "setting"
        if stored:
            return stored, "store"
        raise ConfigError(
            "setting PARTNER_CENTER_REFRESH_TOKEN is not set (nor the Key Vault secret "
            f"{REFRESH_TOKEN_SECRET} when COSELL_KEYVAULT_URL is set): sign in with MFA as the Referrals admin "
            "user (Secure Application Model consent) and put the refresh token there"
        )

    def _acquire(self) -> dict[str, Any]:
        refresh_token, source = self.current_refresh_token()
        try:
            if self._app is None:
                self._app = self._app_factory()
            result = self._app.acquire_token_by_refresh_token(refresh_token, scopes=[self._scope])
        except requests.RequestException as exc:
            self._record_failure(f"token authority unreachable ({type(exc).__name__})", state="unreachable")
            raise Unavailable(f"the token authority could not be reached: {type(exc).__name__}") from None
        if "access_token" not in result:
            try:
                _raise_for_token_error(result, "the Partner Center refresh token")
            except ConnectorError as exc:
                self._record_failure(str(exc), state="unreachable" if isinstance(exc, Unavailable) else "refused")
                raise
        rotated = result.get("refresh_token")
        if rotated and (rotated != refresh_token or source == "setting"):
            self._secrets.put(REFRESH_TOKEN_SECRET, str(rotated))
            if self._seed:
                self._secrets.put(SEED_FINGERPRINT_SECRET, fingerprint(self._seed))
            log.info("Partner Center refresh token rotated and persisted")
        self._record_success(rotated=bool(rotated and rotated != refresh_token), source=source)
        return result

    def _update_status(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to the token status document (If-Match; one retry on a race; never fatal)."""
        if self._status is None:
            return
        for _ in range(2):
            try:
                doc = self._status.get(TOKEN_STATUS) or StatusDoc(name=TOKEN_STATUS)
                data = dict(doc.data)
                change(data)
                self._status.put(doc.model_copy(update={"data": data, "updated_at": _now()}))
                return
            except Conflict:
                continue
            except ConnectorError as exc:
                log.warning("token health not recorded: %s", exc)
                return

    def _record_success(self, *, rotated: bool, source: str) -> None:
        now = _now()

        def change(data: dict[str, Any]) -> None:
            if rotated or source == "setting" or not data.get("refresh_token_obtained_at"):
                data["refresh_token_obtained_at"] = now.isoformat()
            obtained = dt.datetime.fromisoformat(data["refresh_token_obtained_at"])
            age_days = (now - obtained).total_seconds() / 86400
            data.update(
                last_refresh_at=now.isoformat(),
                refresh_token_source=source,
                refresh_token_age_days=round(age_days, 2),
                expires_around=(obtained + dt.timedelta(days=REFRESH_TOKEN_LIFETIME_DAYS)).isoformat(),
                warning=(
                    f"the Partner Center refresh token is {int(age_days)} days old and Microsoft did not "
                    f"replace it: it expires after {REFRESH_TOKEN_LIFETIME_DAYS} days; re-consent with MFA soon"
                ) if age_days >= WARN_AFTER_DAYS else None,
                last_error=None,
                mfa_required=False,
            )
            ages.append(age_days)

        ages: list[float] = []
        self._update_status(change)
        # The age is known only from the status document (when the token was obtained): without one, no days.
        log_token("refreshed", days_left=REFRESH_TOKEN_LIFETIME_DAYS - ages[-1] if ages else None)

    def _record_failure(self, message: str, *, state: str = "refused") -> None:
        """Note a failed redemption on the status page and in telemetry.

        `state` "refused" means a person must act (the token alert fires on it); "unreachable" is the
        authority being down or busy (retried, no alert: a network blip must not page anyone).
        """
        now = _now()
        log_token(state)

        def change(data: dict[str, Any]) -> None:
            data.update(last_error=message, last_error_at=now.isoformat(),
                        mfa_required=MFA_ERROR_CODE in message)

        self._update_status(change)

    def record_api_refusal(self, error: ConnectorError) -> None:
        """Note on the status page that the API refused the token (the MFA refusal comes from the API)."""
        self._record_failure(str(error))


__all__ = [
    "REFERRALS_SCOPE",
    "REFRESH_TOKEN_SECRET",
    "TOKEN_STATUS",
    "WARN_AFTER_DAYS",
    "WEBHOOKS_SCOPE",
    "AppOnlyToken",
    "RefreshTokenCredential",
    "build_msal_app",
    "fingerprint",
]
