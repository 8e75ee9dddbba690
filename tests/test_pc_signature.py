"""Webhook signature verification: the genuine delivery passes, every kind of forgery is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from sandbox.ca import IssuedCert, SandboxCA, self_signed
from sandbox.partner_center import PartnerCenterSim
from shared.partner_center import signature
from shared.partner_center.signature import SignatureRejected, WebhookVerifier, host_allowed, trusted_roots

BODY = json.dumps({"EventName": "referral-updated", "ResourceUri": "https://x/engagements/v1/referrals/abc",
                   "ResourceName": "referral", "AuditUri": None,
                   "ResourceChangeUtcDate": "2026-11-21T16:40:56.311Z"}).encode()


def signed_headers(signer: IssuedCert, cert_url: str, body: bytes = BODY) -> dict[str, str]:
    signature = signer.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
    return {"Authorization": "Signature " + base64.b64encode(signature).decode(), "X-MS-Certificate-Url": cert_url,
            "X-MS-Signature-Algorithm": "rsa-sha256"}


class _CountingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.fetches = 0

    def get(self, url, **kwargs):  # type: ignore[no-untyped-def,override]
        self.fetches += 1
        return super().get(url, **kwargs)


@pytest.fixture
def verifier(pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA) -> WebhookVerifier:
    return WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(str(sandbox_ca.ca_pem_path)),
                           session=_CountingSession())


def test_genuine_delivery_verifies_and_the_certificate_is_cached(pc_sim: PartnerCenterSim,
                                                                  verifier: WebhookVerifier) -> None:
    headers = signed_headers(pc_sim.signer, pc_sim.cert_url)
    leaf = verifier.verify(BODY, headers)
    # Shaped as Partner Center's: no organization in the leaf's subject, Microsoft's in its issuer's.
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Microsoft Corporation"
    verifier.verify(BODY, {k.lower(): v for k, v in headers.items()})  # header names are case-insensitive
    assert verifier._session.fetches == 1  # type: ignore[attr-defined]


def test_pem_certificate_and_x_ms_signature_header(pc_sim: PartnerCenterSim, verifier: WebhookVerifier) -> None:
    url = pc_sim.host_certificate("signer.pem", pc_sim.signer.bundle_pem)
    headers = signed_headers(pc_sim.signer, url)
    headers["X-MS-Signature"] = headers.pop("Authorization")
    verifier.verify(BODY, headers)


def _expect(verifier: WebhookVerifier, headers: dict[str, str], reason: str, body: bytes = BODY) -> None:
    with pytest.raises(SignatureRejected) as info:
        verifier.verify(body, headers)
    assert reason in info.value.reason


def test_forgeries_are_refused(pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA, verifier: WebhookVerifier) -> None:
    good = signed_headers(pc_sim.signer, pc_sim.cert_url)
    _expect(verifier, good, "does not match", body=BODY.replace(b"abc", b"abd"))  # body changed after signing
    _expect(verifier, {**good, "Authorization": "Bearer xyz"}, "Signature scheme")
    _expect(verifier, {k: v for k, v in good.items() if k != "Authorization"}, "Signature scheme")
    _expect(verifier, {**good, "X-MS-Signature-Algorithm": "rsa-sha1"}, "rsa-sha256")
    _expect(verifier, {**good, "X-MS-Certificate-Url": pc_sim.cert_url.replace("https://", "http://")}, "https")
    _expect(verifier, {**good, "X-MS-Certificate-Url": "https://evil.example/cert.cer"}, "allow-list")
    _expect(verifier, {**good, "X-MS-Certificate-Url": pc_sim.url + "/cert/missing.cer"}, "answered 404")

    # Microsoft Corporation in the leaf's subject proves nothing: its issuer is not Microsoft's.
    subject_only = sandbox_ca.issue("pcnotifications-dispatch.microsoft.com", organization="Microsoft Corporation")
    url = pc_sim.host_certificate("subject-only.cer", subject_only.cert_der)
    _expect(verifier, signed_headers(subject_only, url), "issuer organization is not Microsoft Corporation")
    other = sandbox_ca.issue("pcnotifications-dispatch.microsoft.com",
                             issuer=sandbox_ca.intermediate("Contoso Issuing CA", organization="Contoso Corporation"))
    url = pc_sim.host_certificate("wrong-org.pem", other.bundle_pem)
    _expect(verifier, signed_headers(other, url), "issuer organization is not Microsoft Corporation")

    now = dt.datetime.now(dt.timezone.utc)
    expired = sandbox_ca.issue_webhook_signer(not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    url = pc_sim.host_certificate("expired.pem", expired.bundle_pem)
    _expect(verifier, signed_headers(expired, url), "expired")

    forged = self_signed("pcnotifications-dispatch.microsoft.com", organization="Microsoft Corporation", ca=False)
    url = pc_sim.host_certificate("self-signed.cer", forged.cert_der)
    _expect(verifier, signed_headers(forged, url), "trusted root")

    # The genuine certificate URL, but signed by someone else's key.
    _expect(verifier, {**signed_headers(forged, pc_sim.cert_url)}, "does not match")
    url = pc_sim.host_certificate("garbage.cer", b"not a certificate at all")
    _expect(verifier, signed_headers(pc_sim.signer, url), "neither DER nor PEM")


def test_untrusted_without_the_sandbox_bundle(pc_sim: PartnerCenterSim) -> None:
    public_only = WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(None))
    _expect(public_only, signed_headers(pc_sim.signer, pc_sim.cert_url), "trusted root")


def test_intermediate_found_through_authority_information_access(pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA,
                                                                  verifier: WebhookVerifier) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    inter_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sandbox Issuing CA 01"),
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Microsoft Corporation")])
    intermediate = (
        x509.CertificateBuilder().subject_name(inter_name).issuer_name(sandbox_ca.root.cert.subject)
        .public_key(inter_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(sandbox_ca.root.key.public_key()),
                       critical=False)
        .sign(sandbox_ca.root.key, hashes.SHA256())
    )
    issuer_url = pc_sim.host_certificate("issuing-ca-01.crt", intermediate.public_bytes(serialization.Encoding.DER))
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pcnotifications-dispatch.microsoft.com")]))
        .issuer_name(inter_name).public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(issuer_url))]), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    signer = IssuedCert(leaf, leaf_key)
    url = pc_sim.host_certificate("leaf-only.cer", signer.cert_der)
    verifier.verify(BODY, signed_headers(signer, url))
    # The same leaf with its intermediate in the file needs no AIA fetch.
    bundle_url = pc_sim.host_certificate("leaf-and-issuer.pem", signer.cert_pem + intermediate.public_bytes(
        serialization.Encoding.PEM))
    verifier.verify(BODY, signed_headers(signer, bundle_url))


@pytest.mark.parametrize(("host", "allowed", "expected"), [
    ("3psostorageacct.blob.core.windows.net", ["3psostorageacct.blob.core.windows.net"], True),
    ("3PSOSTORAGEACCT.blob.core.windows.net", ["3psostorageacct.blob.core.windows.net"], True),
    ("evil.blob.core.windows.net", ["3psostorageacct.blob.core.windows.net"], False),
    ("acct.blob.core.windows.net", ["*.blob.core.windows.net"], True),
    ("a.b.blob.core.windows.net", ["*.blob.core.windows.net"], False),
    ("blob.core.windows.net", ["*.blob.core.windows.net"], False),
    ("blob.core.windows.net.evil.example", ["*.blob.core.windows.net"], False),
    ("127.0.0.1", ["127.0.0.1:8443"], True),
])
def test_host_allow_list(host: str, allowed: list[str], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


def test_der_ending_in_a_whitespace_byte_still_loads(sandbox_ca: SandboxCA) -> None:
    """Regression: DER is binary; trimming "whitespace" off it broke about one certificate in forty."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pcnotifications-dispatch.microsoft.com")])
    now = dt.datetime.now(dt.timezone.utc)
    for serial in range(1, 5000):
        der = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
        if der[-1:] in (b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"):
            break
    else:
        pytest.fail("no certificate ending in a whitespace byte was produced")
    from shared.partner_center.signature import load_certificates

    assert load_certificates(der)[0].serial_number == serial


def test_a_burst_on_a_cold_cache_fetches_the_certificate_once(pc_sim: PartnerCenterSim,
                                                               sandbox_ca: SandboxCA) -> None:
    """Fifty deliveries arriving together before any certificate is cached: one fetch, all verified."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    started = threading.Event()

    class SlowSession(_CountingSession):
        def get(self, url, **kwargs):  # type: ignore[no-untyped-def,override]
            started.set()
            answer = super().get(url, **kwargs)
            threading.Event().wait(0.2)  # the fetch is still under way while the others arrive
            return answer

    verifier = WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(str(sandbox_ca.ca_pem_path)),
                               session=SlowSession())
    headers = signed_headers(pc_sim.signer, pc_sim.cert_url)
    with ThreadPoolExecutor(max_workers=50) as pool:
        leaves = list(pool.map(lambda _: verifier.verify(BODY, headers), range(50)))
    assert started.is_set() and len(leaves) == 50
    assert verifier._session.fetches == 1  # type: ignore[attr-defined]


def test_a_failed_fetch_is_shared_by_the_burst_and_the_next_delivery_tries_again(pc_sim: PartnerCenterSim,
                                                                                 verifier: WebhookVerifier) -> None:
    """Deliveries waiting for a fetch that fails are refused with its reason; nothing failed is cached."""
    from concurrent.futures import ThreadPoolExecutor

    url = pc_sim.cert_url.replace(".cer", "-missing.cer")
    headers = signed_headers(pc_sim.signer, url)

    def attempt(_: int) -> str:
        try:
            verifier.verify(BODY, headers)
        except SignatureRejected as exc:
            return str(exc)
        return "accepted"

    with ThreadPoolExecutor(max_workers=10) as pool:
        reasons = set(pool.map(attempt, range(10)))
    assert len(reasons) == 1 and next(iter(reasons)).endswith("certificate fetch answered 404")
    fetches = verifier._session.fetches  # type: ignore[attr-defined]
    assert attempt(0) in reasons
    assert verifier._session.fetches == fetches + 1  # type: ignore[attr-defined]
    assert not verifier._fetching


def test_a_burst_builds_the_chain_once_and_an_expired_leaf_is_still_refused(
        pc_sim: PartnerCenterSim, sandbox_ca: SandboxCA, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []

    def counting_policy_builder() -> signature.PolicyBuilder:
        builds.append(1)
        return real_policy_builder()

    real_policy_builder = signature.PolicyBuilder
    monkeypatch.setattr(signature, "PolicyBuilder", counting_policy_builder)
    now = [dt.datetime.now(dt.timezone.utc)]
    verifier = WebhookVerifier(allowed_hosts=["127.0.0.1"], roots=trusted_roots(str(sandbox_ca.ca_pem_path)),
                               clock=lambda: now[0])
    headers = signed_headers(pc_sim.signer, pc_sim.cert_url)
    for _ in range(20):
        verifier.verify(BODY, headers)
    assert len(builds) == 1

    now[0] = pc_sim.signer.cert.not_valid_after_utc + dt.timedelta(seconds=1)
    _expect(verifier, headers, "expired or not yet valid")
    assert len(builds) == 1  # refused by the validity check, before any chain is built
