"""The sandbox certificate authority: one root that both simulators and the tests trust.

Why a CA rather than self-signed server certificates: the connector verifies TLS and webhook signature
chains for real (`REQUESTS_CA_BUNDLE`, `PARTNER_CENTER_WEBHOOK_CA_BUNDLE`), so the sandbox has to offer a
chain to verify. The root is kept in a folder (`ca.pem`, `ca.key`) so a simulator started separately, the
local host and the tests all agree on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_KEY_SIZE = 2048
_ROOT_NAME = "Co-sell Connector Sandbox Root CA"
MICROSOFT_ORGANIZATION = "Microsoft Corporation"
WEBHOOK_SIGNER_NAME = "pcnotifications-dispatch.microsoft.com"


@dataclass(frozen=True)
class IssuedCert:
    """A certificate with its private key, in the encodings the callers need."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...] = ()
    """The intermediates between it and the root, leaf side first (empty when the root signed it)."""

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def bundle_pem(self) -> bytes:
        """The certificate and its intermediates, PEM: what a certificate URL serves so the chain can be built."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain))

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str, organization: str | None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def self_signed(common_name: str, *, organization: str | None = None, ca: bool = True) -> IssuedCert:
    """A certificate signed by its own key: the sandbox root, and the forgeries the tests send."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    name = _name(common_name, organization)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(days=1))
        .not_valid_after(_now() + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    return IssuedCert(builder.sign(key, hashes.SHA256()), key)


class SandboxCA:
    """The root certificate and key of the sandbox, able to issue server and signing certificates."""

    def __init__(self, root: IssuedCert, directory: Path) -> None:
        self.root = root
        self.directory = directory

    @classmethod
    def load_or_create(cls, directory: Path | str) -> SandboxCA:
        """Load `ca.pem`/`ca.key` from `directory`, creating both the first time."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return cls(IssuedCert(cert, key), directory)
        root = self_signed(_ROOT_NAME, organization="Co-sell Connector Sandbox")
        # Write the key first and the certificate last: a reader that sees ca.pem also finds ca.key.
        key_path.write_bytes(root.key_pem)
        key_path.chmod(0o600)
        tmp = cert_path.with_suffix(".tmp")
        tmp.write_bytes(root.cert_pem)
        tmp.replace(cert_path)
        return cls(root, directory)

    @property
    def ca_pem_path(self) -> Path:
        return self.directory / "ca.pem"

    def issue(
        self,
        common_name: str,
        *,
        organization: str | None = None,
        hosts: tuple[str, ...] | list[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        issuer: IssuedCert | None = None,
    ) -> IssuedCert:
        """Issue a leaf certificate signed by the sandbox root (or by `issuer`, an intermediate of it).

        Args:
            common_name: the subject CN.
            organization: the subject O.
            hosts: DNS names or IP addresses for a TLS server certificate (empty for a signing certificate).
            not_before: start of validity (default: a day ago).
            not_after: end of validity (default: in a year; pass a past time for an expired certificate).
            issuer: the intermediate that signs it (`intermediate()`); default the root.
        """
        signer = issuer or self.root
        key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(signer.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or _now() - dt.timedelta(days=1))
            .not_valid_after(not_after or _now() + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        chain = (signer.cert, *signer.chain) if issuer is not None else ()
        return IssuedCert(builder.sign(signer.key, hashes.SHA256()), key, chain)

    def intermediate(self, common_name: str, *, organization: str | None = None) -> IssuedCert:
        """An intermediate CA signed by the root (new key each call: kept by the caller, not on disk)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.root.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(days=1))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.root.key.public_key()), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(self.root.key, hashes.SHA256())
        )
        return IssuedCert(cert, key)

    def issue_webhook_signer(self, **options: dt.datetime | None) -> IssuedCert:
        """A certificate shaped like Partner Center's webhook signer: the leaf's subject carries no
        organization, its issuer (an intermediate, like Microsoft's TLS issuing CAs) is O=Microsoft
        Corporation, which is what Microsoft's samples check.

        Args:
            options: `not_before` / `not_after`, as for `issue`.
        """
        issuing = self.intermediate("Sandbox Microsoft TLS Issuing CA", organization=MICROSOFT_ORGANIZATION)
        return self.issue(WEBHOOK_SIGNER_NAME, issuer=issuing, **options)  # type: ignore[arg-type]

    def server_ssl_context(self, hosts: tuple[str, ...] | list[str] = ("127.0.0.1", "localhost")) -> ssl.SSLContext:
        """A TLS server context with a fresh certificate for `hosts`, chained to the sandbox root."""
        issued = self.issue(hosts[0], hosts=hosts)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # ssl only loads certificates from files; keep them in a private temporary folder.
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp) / "server.pem", Path(tmp) / "server.key"
            cert_file.write_bytes(issued.cert_pem + self.root.cert_pem)
            key_file.write_bytes(issued.key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context


__all__ = ["MICROSOFT_ORGANIZATION", "WEBHOOK_SIGNER_NAME", "IssuedCert", "SandboxCA", "self_signed"]
