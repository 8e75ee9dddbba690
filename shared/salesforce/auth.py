"""Getting a Salesforce access token from `SALESFORCE_LOGIN_URL/services/oauth2/token`.

Why not simple-salesforce's login helpers: they append `.salesforce.com` to a domain, so they cannot log in
to a My Domain URL given whole, nor to the simulator. The connector posts the grant itself and hands the
returned `instance_url` and token to simple-salesforce.

Which grant, by the settings present (the first that applies):
1. `SALESFORCE_PRIVATE_KEY` -> JWT bearer (needs `SALESFORCE_CLIENT_ID`, `SALESFORCE_USERNAME`): the
   recommended unattended login, no password anywhere. The key is PEM text or the path of a PEM file.
2. `SALESFORCE_PASSWORD` -> username + password + security token (needs client id and secret, username):
   a fallback for orgs that allow it. Salesforce retires this flow for connected apps on 20 February 2027
   (`login_notice` says so on the status page): JWT bearer is the production path.
3. `SALESFORCE_CLIENT_SECRET` -> client credentials (needs the client id; the app's "run as" user acts):
   the login URL must then be the org's My Domain URL: Salesforce refuses this flow on login.salesforce.com
   and test.salesforce.com, so the connector refuses that setting before trying.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from shared.errors import AuthExpired, ConfigError, Unavailable

if TYPE_CHECKING:
    from shared.settings import Settings

JWT_LIFETIME = 170
"""Seconds a JWT assertion is valid: Salesforce accepts at most 3 minutes."""


class Grant(str, Enum):
    JWT_BEARER = "jwt_bearer"
    PASSWORD = "password"
    CLIENT_CREDENTIALS = "client_credentials"


class Token(BaseModel):
    """The token endpoint's answer, the parts the connector uses."""

    model_config = ConfigDict(extra="ignore")

    access_token: str
    instance_url: str
    id: str | None = None
    """The identity URL (`https://.../id/{orgId}/{userId}`): who logged in, in which org."""

    def __repr__(self) -> str:
        return f"Token(instance_url={self.instance_url!r})"  # never the token itself

    __str__ = __repr__


@dataclass(frozen=True)
class Credentials:
    """One way to log in, chosen from the settings (see the module docstring)."""

    grant: Grant
    client_id: str | None = None
    username: str | None = None
    private_key_pem: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        """Pick the grant by which settings are present.

        Raises:
            ConfigError: no grant is possible, or the chosen one lacks a setting (named in the message).
        """
        if _given(settings, "salesforce_private_key"):
            return cls(Grant.JWT_BEARER, client_id=settings.require("salesforce_client_id"),
                       username=settings.require("salesforce_username"),
                       private_key_pem=load_private_key(settings.require("salesforce_private_key")))
        if _given(settings, "salesforce_password"):
            return cls(Grant.PASSWORD, client_id=settings.require("salesforce_client_id"),
                       client_secret=settings.require("salesforce_client_secret"),
                       username=settings.require("salesforce_username"),
                       password=settings.require("salesforce_password"),
                       security_token=settings.require("salesforce_security_token")
                       if _given(settings, "salesforce_security_token") else "")
        if _given(settings, "salesforce_client_secret"):
            if is_generic_login_host(settings.salesforce_login_url):
                raise ConfigError(
                    f"setting SALESFORCE_LOGIN_URL: the client credentials flow (SALESFORCE_CLIENT_SECRET) is refused "
                    f"by Salesforce on {urlsplit(settings.salesforce_login_url).hostname}: set the org's My Domain "
                    "URL (https://MyCompany.my.salesforce.com, or https://MyCompany--Sandbox.sandbox.my.salesforce.com)")
            return cls(Grant.CLIENT_CREDENTIALS, client_id=settings.require("salesforce_client_id"),
                       client_secret=settings.require("salesforce_client_secret"))
        raise ConfigError(
            "no Salesforce login is configured: set SALESFORCE_PRIVATE_KEY (JWT bearer, recommended), "
            "SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN), or SALESFORCE_CLIENT_SECRET (client credentials), "
            "with SALESFORCE_CLIENT_ID and SALESFORCE_USERNAME"
        )

    def form(self, login_url: str) -> dict[str, str]:
        """The token request's form fields for this grant."""
        if self.grant is Grant.JWT_BEARER:
            assert self.private_key_pem and self.client_id and self.username
            assertion = jwt_assertion(self.private_key_pem, issuer=self.client_id, subject=self.username,
                                      audience=jwt_audience(login_url))
            return {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        if self.grant is Grant.PASSWORD:
            return {"grant_type": "password", "client_id": self.client_id or "",
                    "client_secret": self.client_secret or "", "username": self.username or "",
                    "password": (self.password or "") + (self.security_token or "")}
        return {"grant_type": "client_credentials", "client_id": self.client_id or "",
                "client_secret": self.client_secret or ""}


GENERIC_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
PASSWORD_RETIREMENT = "2027-02-20"
"""When Salesforce stops the username-password flow for connected apps (Salesforce Help, article 005461976)."""


def is_generic_login_host(login_url: str) -> bool:
    """True for login.salesforce.com and test.salesforce.com (not an org's own My Domain URL)."""
    return (urlsplit(login_url).hostname or "").lower() in GENERIC_LOGIN_HOSTS


def login_notice(grant: Grant) -> str | None:
    """What an operator must know about the configured login, or None when nothing."""
    if grant is Grant.PASSWORD:
        return ("Salesforce login uses the username-password flow (SALESFORCE_PASSWORD), which Salesforce is "
                f"retiring for connected apps on {PASSWORD_RETIREMENT}: switch to the JWT bearer flow "
                "(SALESFORCE_PRIVATE_KEY) before then")
    return None


def _given(settings: Settings, name: str) -> bool:
    """Set and not empty (local.settings.example.json lists every setting, unused ones as "")."""
    value = getattr(settings, name)
    return bool(value.get_secret_value() if isinstance(value, SecretStr) else value)


def load_private_key(value: str) -> str:
    """PEM text from the setting: the text itself (app settings often escape newlines as `\\n`) or a file."""
    text = value.replace("\\n", "\n").strip()
    if "-----BEGIN" not in text:
        path = Path(value).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            raise ConfigError("SALESFORCE_PRIVATE_KEY is neither PEM text nor a readable PEM file path") from None
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("SALESFORCE_PRIVATE_KEY is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("SALESFORCE_PRIVATE_KEY must be an RSA key (the JWT bearer flow signs with RS256)")
    return text


def jwt_audience(login_url: str) -> str:
    """The `aud` Salesforce expects: login.salesforce.com, or test.salesforce.com for sandboxes, even
    when logging in through a My Domain URL; any other host (the simulator) is its own audience."""
    host = (urlsplit(login_url).hostname or "").lower()
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    if host.endswith(".salesforce.com"):
        return "https://login.salesforce.com"
    return login_url.rstrip("/")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_assertion(private_key_pem: str, *, issuer: str, subject: str, audience: str) -> str:
    """An RS256-signed JWT bearer assertion (RFC 7523) valid for `JWT_LIFETIME` seconds."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    header = _b64url(json.dumps({"alg": "RS256"}).encode())
    claims = _b64url(json.dumps({"iss": issuer, "sub": subject, "aud": audience,
                                 "exp": int(time.time()) + JWT_LIFETIME}).encode())
    signature = key.sign(f"{header}.{claims}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_b64url(signature)}"


def fetch_token(session: requests.Session, login_url: str, credentials: Credentials) -> Token:
    """Log in and return the token with its instance URL.

    Raises:
        AuthExpired: Salesforce refused the login (wrong user, key, password, or the app not approved).
        ConfigError: the client app is unknown or does not allow this grant.
        Unavailable: the login URL did not answer, or answered 5xx.
    """
    url = f"{login_url.rstrip('/')}/services/oauth2/token"
    try:
        response = session.post(url, data=credentials.form(login_url), headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise Unavailable(f"Salesforce login at {login_url} is not reachable ({type(exc).__name__})") from None
    if response.status_code >= 500:
        raise Unavailable(f"Salesforce login at {login_url} answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        error = str(body.get("error", response.status_code)) if isinstance(body, dict) else str(response.status_code)
        description = str(body.get("error_description", ""))[:200] if isinstance(body, dict) else ""
        who = f" for {credentials.username}" if credentials.username else ""
        text = f"Salesforce refused the {credentials.grant.value} login{who} at {login_url}: {error} {description}".rstrip()
        if error in ("invalid_client_id", "invalid_client", "unsupported_grant_type", "invalid_request"):
            raise ConfigError(f"{text}: check SALESFORCE_CLIENT_ID / SALESFORCE_CLIENT_SECRET and the app's OAuth settings")
        raise AuthExpired(text)
    try:
        return Token.model_validate(body)
    except ValidationError:
        raise Unavailable(f"Salesforce login at {login_url} answered without a token") from None


__all__ = ["GENERIC_LOGIN_HOSTS", "PASSWORD_RETIREMENT", "Credentials", "Grant", "Token", "fetch_token",
           "is_generic_login_host", "jwt_assertion", "jwt_audience", "load_private_key", "login_notice"]
