"""Verifying that a webhook delivery really comes from Partner Center, as the handbook prescribes.

Every delivery carries `Authorization: Signature <base64>` (or `X-MS-Signature` when the registration asks
for it), `X-MS-Signature-Algorithm: rsa-sha256` and `X-MS-Certificate-Url`. A delivery is accepted only when

1. the certificate URL is `https://` on an allow-listed host (`PARTNER_CENTER_WEBHOOK_CERT_HOSTS`; an entry
   `*.example.net` matches one label in its place; ports are not compared),
2. the certificate, fetched with a short timeout, a size cap and no redirects (DER or PEM), chains to a
   trusted root (certifi's roots plus `PARTNER_CENTER_WEBHOOK_CA_BUNDLE`) and is valid now, checked by
   cryptography's X.509 path validation. Intermediates come from the certificate file itself, else from the
   leaf's Authority Information Access "CA issuers" URL (they prove nothing by themselves: the chain must
   still end at a trusted root),
3. its issuer's organisation is "Microsoft Corporation" (what Microsoft's own webhook samples check: the
   leaf's subject need not name an organisation; the chain check above proves the issuer named is the one
   that signed it),
4. the RSA-SHA256 (PKCS#1 v1.5) signature over the exact raw body verifies with its public key.

Certificates are cached by URL (a day), and fetched once however many deliveries ask at the same time (the
first of a burst fetches, the others wait for its answer), so a burst of events costs one fetch; the chain
built for a certificate is kept for as long as every certificate in it is valid, so it is built once too.
Anything else raises `SignatureRejected` with a short reason that is safe to return to the caller.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import certifi
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from cryptography.x509.verification import ClientVerifier, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from shared.errors import ConfigError, InvalidInput
from shared.partner_center.transport import TimeoutSession

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger("shared.partner_center")

MICROSOFT_ORGANIZATION = "Microsoft Corporation"
SIGNATURE_HEADERS = ("Authorization", "X-MS-Signature", "X-MS-Signature-Algorithm", "X-MS-Certificate-Url")
"""The headers a forwarded event must keep so its receiver can verify it too."""
MAX_CERT_BYTES = 64 * 1024
FETCH_TIMEOUT = (3.0, 5.0)
CACHE_SECONDS = 24 * 3600
MAX_AIA_FETCHES = 2


class SignatureRejected(InvalidInput):
    """The delivery is not provably from Partner Center; `reason` is short and safe to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook signature rejected: {reason}")
        self.reason = reason


def host_allowed(host: str, allowed: list[str]) -> bool:
    """True when `host` equals an entry or matches a `*.` entry in exactly the starred label."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().split(":", 1)[0] if entry.count(":") == 1 else entry.lower()
        if entry.startswith("*."):
            suffix = entry[1:]
            if host.endswith(suffix) and "." not in host[: -len(suffix)] and host[: -len(suffix)]:
                return True
        elif host == entry:
            return True
    return False


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Certificates from a `.cer`/`.pem` file: PEM (one or more), DER, or bare base64 of DER."""
    stripped = data.strip()  # for the text forms only: DER may well end in a byte that looks like a space
    if stripped.startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificates(stripped)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return [x509.load_der_x509_certificate(base64.b64decode(stripped, validate=False))]


@functools.cache
def _certifi_roots() -> tuple[x509.Certificate, ...]:
    with warnings.catch_warnings():  # a few public roots have serials RFC 5280 now frowns upon
        warnings.simplefilter("ignore")
        return tuple(x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes()))


def trusted_roots(extra_bundle: str | None) -> list[x509.Certificate]:
    """certifi's public roots plus the certificates of `extra_bundle` (a PEM file), if given."""
    roots = list(_certifi_roots())
    if extra_bundle:
        try:
            roots.extend(x509.load_pem_x509_certificates(Path(extra_bundle).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"setting PARTNER_CENTER_WEBHOOK_CA_BUNDLE: {extra_bundle} is not a readable PEM file ({exc})"
            ) from None
    return roots


class WebhookVerifier:
    """Checks webhook deliveries; keeps fetched certificates by URL.

    Args:
        allowed_hosts: the certificate URL host allow-list.
        roots: the trust anchors.
        session: the HTTP session for certificate fetches (REQUESTS_CA_BUNDLE applies to its TLS).
        clock: injectable "now" for validity checks.
    """

    def __init__(self, *, allowed_hosts: list[str], roots: list[x509.Certificate],
                 session: requests.Session | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc)) -> None:
        if not allowed_hosts:
            raise ConfigError("setting PARTNER_CENTER_WEBHOOK_CERT_HOSTS is empty: no webhook could be verified")
        self.allowed_hosts = allowed_hosts
        self._store = Store(roots)
        self._session = session or TimeoutSession(FETCH_TIMEOUT)
        self._clock = clock
        self._cache: dict[str, tuple[float, list[x509.Certificate]]] = {}
        self._fetching: dict[str, Future[list[x509.Certificate]]] = {}
        """The fetches under way, by URL (only while they run: bounded by the deliveries in flight)."""
        self._chains: dict[bytes, tuple[dt.datetime, dt.datetime]] = {}
        """Leaves whose chain to a trusted root was built, by SHA-256 fingerprint: from when to when that chain
        holds (only trusted ones: bounded by the certificates Microsoft signs with)."""
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, session: requests.Session | None = None) -> WebhookVerifier:
        return cls(allowed_hosts=settings.webhook_cert_hosts,
                   roots=trusted_roots(settings.partner_center_webhook_ca_bundle), session=session)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> x509.Certificate:
        """Accept the delivery or raise `SignatureRejected`; returns the signing certificate.

        Args:
            body: the raw request body, exactly as received.
            headers: the request headers (case-insensitive lookups are done here).
        """
        lowered = {key.lower(): value for key, value in headers.items()}
        signature = self._signature(lowered)
        algorithm = (lowered.get("x-ms-signature-algorithm") or "").strip().lower()
        if algorithm != "rsa-sha256":
            raise SignatureRejected("X-MS-Signature-Algorithm must be rsa-sha256")
        cert_url = (lowered.get("x-ms-certificate-url") or "").strip()
        if not cert_url:
            raise SignatureRejected("X-MS-Certificate-Url is missing")
        chain = self._certificates(cert_url)
        leaf = chain[0]
        self._check_chain(leaf, chain[1:])
        organizations = [a.value for a in leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        if MICROSOFT_ORGANIZATION not in organizations:
            raise SignatureRejected(f"certificate issuer organization is not {MICROSOFT_ORGANIZATION}")
        public_key = leaf.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureRejected("certificate key is not RSA")
        try:
            public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureRejected("signature does not match the body") from None
        return leaf

    @staticmethod
    def _signature(headers: Mapping[str, str]) -> bytes:
        value = headers.get("authorization") or headers.get("x-ms-signature") or ""
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "signature":
            # X-MS-Signature may hold the bare value; Authorization must name the Signature scheme.
            if headers.get("authorization") or not scheme:
                raise SignatureRejected("Authorization header with the Signature scheme is missing")
            token = scheme
        try:
            return base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureRejected("signature is not base64") from None

    def _certificates(self, url: str) -> list[x509.Certificate]:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed or non-IP "[...]" host: the sender's header, not our failure
            raise SignatureRejected("certificate URL is not a valid URL") from None
        if parts.scheme != "https":
            raise SignatureRejected("certificate URL must be https")
        if not parts.hostname or not host_allowed(parts.hostname, self.allowed_hosts):
            raise SignatureRejected("certificate host is not on the allow-list")
        with self._lock:
            cached = self._cache.get(url)
            if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
                return cached[1]
            pending = self._fetching.get(url)
            leader = pending is None
            if pending is None:
                pending = self._fetching[url] = Future()
        if not leader:
            return pending.result()  # the first caller's certificates, or its SignatureRejected
        try:
            certificates = self._load(url)
        except BaseException as exc:
            with self._lock:
                del self._fetching[url]
            pending.set_exception(exc)
            raise
        with self._lock:
            self._cache[url] = (time.monotonic(), certificates)
            del self._fetching[url]
        pending.set_result(certificates)
        return certificates

    def _load(self, url: str) -> list[x509.Certificate]:
        data = self._fetch(url)
        try:
            certificates = load_certificates(data)
        except ValueError:
            raise SignatureRejected("certificate is neither DER nor PEM") from None
        if not certificates:
            raise SignatureRejected("certificate file is empty")
        return certificates

    def _fetch(self, url: str) -> bytes:
        try:
            with self._session.get(url, timeout=FETCH_TIMEOUT, allow_redirects=False, stream=True) as response:
                if response.status_code != 200:
                    raise SignatureRejected(f"certificate fetch answered {response.status_code}")
                data = b""
                for chunk in response.iter_content(8192):
                    data += chunk
                    if len(data) > MAX_CERT_BYTES:
                        raise SignatureRejected("certificate file is too large")
                return data
        except requests.RequestException as exc:
            log.warning("webhook certificate fetch from %s failed: %s", urlsplit(url).hostname, type(exc).__name__)
            raise SignatureRejected("certificate could not be fetched") from None

    def _check_chain(self, leaf: x509.Certificate, intermediates: list[x509.Certificate]) -> None:
        """Path validation to a trusted root, once a leaf: the chain it built holds for as long as every certificate
        in it is valid (nothing else in the check depends on time), so a burst of deliveries signed with one
        certificate builds it once. Path validation was the receiver's largest share of CPU after the queue."""
        now = self._clock()
        fingerprint = leaf.fingerprint(hashes.SHA256())
        window = self._chains.get(fingerprint)
        if window is not None and window[0] <= now <= window[1]:
            return
        if now > leaf.not_valid_after_utc or now < leaf.not_valid_before_utc:
            raise SignatureRejected("certificate is expired or not yet valid")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier()
        )
        try:
            chain = verifier.verify(leaf, intermediates).chain
        except VerificationError:
            chain = self._verify_with_aia(verifier, leaf, intermediates)
        self._chains[fingerprint] = (max(c.not_valid_before_utc for c in chain),
                                     min(c.not_valid_after_utc for c in chain))

    def _verify_with_aia(self, verifier: ClientVerifier, leaf: x509.Certificate,
                         intermediates: list[x509.Certificate]) -> list[x509.Certificate]:
        if fetched := self._aia_issuers(leaf):
            try:
                return verifier.verify(leaf, intermediates + fetched).chain
            except VerificationError:
                pass
        raise SignatureRejected("certificate does not chain to a trusted root")

    def _aia_issuers(self, leaf: x509.Certificate) -> list[x509.Certificate]:
        """Issuer certificates named by the leaf's AIA extension (untrusted chain candidates only)."""
        try:
            access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        except x509.ExtensionNotFound:
            return []
        urls = [d.access_location.value for d in access
                if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
                and urlsplit(d.access_location.value).scheme in ("http", "https")][:MAX_AIA_FETCHES]
        issuers: list[x509.Certificate] = []
        for url in urls:
            with self._lock:
                cached = self._cache.get(url)
            if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
                issuers.extend(cached[1])
                continue
            try:
                certificates = load_certificates(self._fetch(url))
            except (SignatureRejected, ValueError):
                continue
            with self._lock:
                self._cache[url] = (time.monotonic(), certificates)
            issuers.extend(certificates)
        return issuers


__all__ = [
    "MICROSOFT_ORGANIZATION",
    "SIGNATURE_HEADERS",
    "SignatureRejected",
    "WebhookVerifier",
    "host_allowed",
    "load_certificates",
    "trusted_roots",
]
