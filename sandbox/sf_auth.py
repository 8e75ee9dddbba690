"""Salesforce's OAuth token endpoint and sessions, as the simulator plays them.

Why real checks: the connector gets its token itself (JWT bearer, client credentials, or username +
password + security token) and hands `instance_url` and the token to simple-salesforce. The simulator
verifies the JWT's RS256 signature against the certificate uploaded to the (simulated) External Client
App and checks `iss`, `sub`, `aud` and `exp`, so a connector that signs wrongly or sends the wrong audience
fails here exactly as against a real org. Sessions can be expired on request so the "re-authenticate once
on INVALID_SESSION_ID" path runs for real.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.sf_org import Org, RequestError, SimUser


@dataclass
class ClientApp:
    """The External Client App (or connected app) the connector authenticates through.

    Attributes:
        client_id: the consumer key (`iss` of the JWT).
        client_secret: the consumer secret (client credentials and password grants).
        certificate_pem: the certificate uploaded for the JWT bearer flow (None: JWT disabled).
        run_as: the username the client credentials flow runs as (None: that flow disabled).
    """

    client_id: str
    client_secret: str
    certificate_pem: bytes | None = None
    run_as: str | None = None


class TokenError(Exception):
    """An OAuth error answer: `{"error": ..., "error_description": ...}` with HTTP 400."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class Session:
    user: SimUser
    expires_at: dt.datetime


def _b64url(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("invalid_grant", "invalid assertion") from None


class Authenticator:
    """Issues and checks access tokens for one org and one client app.

    Args:
        org: the org whose users log in.
        app: the client app's credentials.
        session_lifetime: how long a token lives (Salesforce's session timeout).
        token_marker: put into every access token issued (tests look for it in logs and storage).
        my_domain: the token endpoint is the org's My Domain URL; False plays login/test.salesforce.com,
            where Salesforce refuses the client credentials flow.
    """

    def __init__(self, org: Org, app: ClientApp, *, session_lifetime: dt.timedelta = dt.timedelta(hours=2),
                 token_marker: str = "", my_domain: bool = True) -> None:
        self.org = org
        self.app = app
        self.my_domain = my_domain
        self.session_lifetime = session_lifetime
        self.token_marker = token_marker
        self._sessions: dict[str, Session] = {}
        self.tokens_issued = 0

    # -- the token endpoint

    def token(self, body: bytes, headers: dict[str, str], login_url: str) -> dict[str, Any]:
        """Answer `POST /services/oauth2/token`; raises TokenError with Salesforce's error names."""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        self._basic_auth(headers, form)
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            user = self._jwt(form.get("assertion", ""), login_url)
        elif grant == "client_credentials":
            user = self._client_credentials(form)
        elif grant == "password":
            user = self._password(form)
        else:
            raise TokenError("unsupported_grant_type", "grant type not supported")
        return self._issue(user, login_url)

    @staticmethod
    def _basic_auth(headers: dict[str, str], form: dict[str, str]) -> None:
        value = headers.get("authorization", "")
        if value.lower().startswith("basic "):
            try:
                client_id, _, secret = base64.b64decode(value[6:]).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise TokenError("invalid_client", "invalid client credentials") from None
            form.setdefault("client_id", client_id)
            form.setdefault("client_secret", secret)

    def _check_client(self, form: dict[str, str]) -> None:
        if form.get("client_id") != self.app.client_id:
            raise TokenError("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(form.get("client_secret", ""), self.app.client_secret):
            raise TokenError("invalid_client", "invalid client credentials")

    def _jwt(self, assertion: str, login_url: str) -> SimUser:
        if self.app.certificate_pem is None:
            raise TokenError("invalid_grant", "JWT bearer flow is not enabled for this app")
        parts = assertion.split(".")
        if len(parts) != 3:
            raise TokenError("invalid_grant", "invalid assertion")
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TokenError("invalid_grant", "invalid assertion") from None
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            raise TokenError("invalid_grant", "invalid assertion: alg must be RS256")
        key = x509.load_pem_x509_certificate(self.app.certificate_pem).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        try:
            key.verify(_b64url(parts[2]), f"{parts[0]}.{parts[1]}".encode("ascii"), padding.PKCS1v15(),
                       hashes.SHA256())
        except InvalidSignature:
            raise TokenError("invalid_grant", "invalid assertion: signature verification failed") from None
        if claims.get("iss") != self.app.client_id:
            raise TokenError("invalid_client_id", "client identifier invalid")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(a, str) and a.rstrip("/") == login_url.rstrip("/") for a in audiences):
            raise TokenError("invalid_grant", "audience is invalid")
        exp = claims.get("exp")
        now = self.org.clock().timestamp()
        if not isinstance(exp, int | float) or exp <= now:
            raise TokenError("invalid_grant", "expired authorization code")
        if exp > now + 3 * 60 + 30:
            raise TokenError("invalid_grant", "invalid assertion: exp must be within 3 minutes")
        user = self.org.users.get(str(claims.get("sub")))
        if user is None:
            raise TokenError("invalid_grant", "user hasn't approved this consumer")
        return user

    def _client_credentials(self, form: dict[str, str]) -> SimUser:
        if not self.my_domain:
            raise TokenError("invalid_grant", "request not supported on this domain")
        self._check_client(form)
        if self.app.run_as is None or self.app.run_as not in self.org.users:
            raise TokenError("invalid_grant", "no client credentials user enabled")
        return self.org.users[self.app.run_as]

    def _password(self, form: dict[str, str]) -> SimUser:
        self._check_client(form)
        user = self.org.users.get(form.get("username", ""))
        if user is None or not hmac.compare_digest(form.get("password", ""), user.password + user.security_token):
            raise TokenError("invalid_grant", "authentication failure")
        return user

    def _issue(self, user: SimUser, login_url: str) -> dict[str, Any]:
        token = f"{self.org.org_id[:15]}!{self.token_marker}{secrets.token_urlsafe(48)}"
        now = self.org.clock()
        self._sessions[token] = Session(user, now + self.session_lifetime)
        self.tokens_issued += 1
        identity = f"{login_url}/id/{self.org.org_id}/{user.id}"
        issued_at = str(int(now.timestamp() * 1000))
        signature = base64.b64encode(
            hmac.new(self.app.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        return {"access_token": token, "instance_url": login_url, "id": identity, "token_type": "Bearer",
                "issued_at": issued_at, "signature": signature, "scope": "api"}

    # -- sessions

    def user_for(self, authorization: str | None) -> SimUser:
        """The user of a `Bearer` (or `OAuth`) token; RequestError INVALID_SESSION_ID (401) otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        session = self._sessions.get(token.strip()) if scheme.lower() in ("bearer", "oauth") else None
        if session is None or session.expires_at <= self.org.clock():
            raise RequestError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        return session.user

    def expire_sessions(self, username: str | None = None) -> int:
        """End every session (or one user's); returns how many ended."""
        ended = [t for t, s in self._sessions.items() if username is None or s.user.username == username]
        for token in ended:
            del self._sessions[token]
        return len(ended)


__all__ = ["Authenticator", "ClientApp", "Session", "TokenError"]
