"""Throw-away test PKI generated at run time with ``cryptography``.

Nothing here is meant for production: keys are created fresh for every
:class:`CertificateAuthority`, kept in memory, and only written to disk when a
test server needs a file for :meth:`ssl.SSLContext.load_cert_chain`. No key
material is ever committed to the repository.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securesession import spki_pin
from securesession._files import write_private_file

__all__ = ["CertificateAuthority", "IssuedCert", "KeyType"]

#: Key algorithms the test PKI can generate. EC P-256 is the default because
#: key generation is ~1000x faster than RSA-2048 and keeps the suite quick.
KeyType = Literal["ec", "rsa"]

# Private key types we generate (and therefore can load back and re-serialise).
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Leave a little slack on not_before so a cert issued "now" is valid even if
# the verifying side's clock is a few seconds behind ours.
_CLOCK_SKEW = timedelta(minutes=5)
# A year: well clear of the library's client-certificate expiry warning (30 days), so a
# default test certificate never warns; pass not_after for a short-lived or expired one.
_DEFAULT_LEAF_LIFETIME = timedelta(days=365)
# The CA outlives every certificate it issues with the default lifetime.
_CA_LIFETIME = timedelta(days=3650)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _generate_key(key_type: KeyType) -> _PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unsupported key_type {key_type!r}; expected 'ec' or 'rsa'")


def _load_key(key_pem: bytes) -> _PrivateKey:
    key = serialization.load_pem_private_key(key_pem, password=None)
    # Only EC and RSA keys are ever generated here; the check narrows the type
    # for PKCS#12 serialisation, which does not accept every key algorithm.
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TypeError(f"unexpected private key type {type(key).__name__}")
    return key


def _key_usage(
    *, signs_certificates: bool = False, key_encipherment: bool = False
) -> x509.KeyUsage:
    """Digital signatures, always; certificate and CRL signing for a CA; key
    encipherment where asked. Nothing else."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _validity(not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    """Resolve default validity bounds, keeping not_before < not_after.

    A caller asking for an already-expired cert (``not_after`` in the past)
    gets a one-day window ending at ``not_after`` unless it says otherwise.
    """
    now = _now()
    if not_after is None:
        base = not_before if not_before is not None else now
        not_after = max(base, now) + _DEFAULT_LEAF_LIFETIME
    if not_before is None:
        not_before = now - _CLOCK_SKEW
        if not_before >= not_after:
            not_before = not_after - timedelta(days=1)
    if not_before >= not_after:
        raise ValueError("not_before must be earlier than not_after")
    return not_before, not_after


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its private key, issued by a test CA.

    ``key_pem`` is unencrypted PKCS#8 PEM; it lives in memory and, via
    :meth:`write_pem`, in test-owned directories only. ``repr`` never shows
    key material.
    """

    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    ca_pem: bytes = field(repr=False)
    serial: int
    subject_cn: str

    @property
    def chain_pem(self) -> bytes:
        """Leaf certificate followed by the issuing CA certificate (PEM)."""
        return self.cert_pem + self.ca_pem

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed leaf certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        """The parsed private key (EC P-256 unless issued with ``key_type='rsa'``)."""
        return _load_key(self.key_pem)

    @property
    def spki_sha256_pin(self) -> str:
        """``sha256/<base64>`` pin of the DER SubjectPublicKeyInfo (OkHttp/HPKP form)."""
        return spki_pin(self.certificate)

    def encrypted_key_pem(self, passphrase: bytes) -> bytes:
        """The private key as PKCS#8 PEM encrypted with ``passphrase``."""
        if not passphrase:
            raise ValueError("passphrase must not be empty")
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    def pkcs12(self, password: bytes, *, legacy: bool = False) -> bytes:
        """A PKCS#12 bundle holding the key, the leaf cert and the CA cert.

        ``legacy=True`` uses PBES1 SHA1/3DES with a SHA-1 MAC, the format old
        Windows certificate exports produce. An empty password yields an
        unencrypted bundle.
        """
        encryption: serialization.KeySerializationEncryption
        if not password:
            encryption = serialization.NoEncryption()
        elif legacy:
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(2048)
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())  # noqa: S303 - deliberately legacy format
                .build(password)
            )
        else:
            encryption = serialization.BestAvailableEncryption(password)
        ca_cert = x509.load_pem_x509_certificate(self.ca_pem)
        return pkcs12.serialize_key_and_certificates(
            name=self.subject_cn.encode("utf-8"),
            key=self.private_key,
            cert=self.certificate,
            cas=[ca_cert],
            encryption_algorithm=encryption,
        )

    def write_pem(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write the cert and unencrypted key into ``directory``.

        Meant for server-side ``load_cert_chain`` in temporary directories.
        File names include the serial so several certs can share a directory;
        the key file is created with mode 0600.
        """
        base = Path(directory)
        cert_path = base / f"cert-{self.serial:x}.pem"
        key_path = base / f"key-{self.serial:x}.pem"
        cert_path.write_bytes(self.cert_pem)
        write_private_file(key_path, self.key_pem, overwrite=True, what="key file", error=OSError)
        return cert_path, key_path


class CertificateAuthority:
    """A self-signed test CA that issues server and client certificates.

    ``repr`` shows the common name only, never key material.
    """

    def __init__(
        self, common_name: str = "securesession test CA", *, key_type: KeyType = "ec"
    ) -> None:
        self.common_name = common_name
        self.key_type: KeyType = key_type
        self.key: _PrivateKey = _generate_key(key_type)
        now = _now()
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        public_key = self.key.public_key()
        self.cert: x509.Certificate = (
            x509.CertificateBuilder()
            .subject_name(self._name)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + _CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(signs_certificates=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem: bytes = self.cert.public_bytes(serialization.Encoding.PEM)
        self._crl_number = 0

    def __repr__(self) -> str:
        return f"CertificateAuthority(common_name={self.common_name!r})"

    @property
    def serial(self) -> int:
        """Serial number of the CA certificate."""
        return self.cert.serial_number

    @property
    def spki_sha256_pin(self) -> str:
        """``sha256/<base64>`` SPKI pin of the CA certificate."""
        return spki_pin(self.cert)

    def write_cert_pem(self, directory: str | os.PathLike[str]) -> Path:
        """Write the CA certificate to ``directory`` (e.g. for ``requests`` ``verify=``)."""
        path = Path(directory) / f"ca-{self.serial:x}.pem"
        path.write_bytes(self.cert_pem)
        return path

    def _issue(
        self,
        common_name: str,
        *,
        eku: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName],
        not_before: datetime | None,
        not_after: datetime | None,
        key_type: KeyType | None,
    ) -> IssuedCert:
        key = _generate_key(key_type or self.key_type)
        start, end = _validity(not_before, not_after)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # RSA key exchange (TLS <= 1.2 legacy suites) needs key encipherment.
                _key_usage(key_encipherment=isinstance(key, rsa.RSAPrivateKey)),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCert(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            ca_pem=self.cert_pem,
            serial=serial,
            subject_cn=common_name,
        )

    def issue_server(
        self,
        hosts: Sequence[str] = ("127.0.0.1", "localhost"),
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType | None = None,
    ) -> IssuedCert:
        """Issue a serverAuth certificate for ``hosts``.

        IP literals become IP SANs, everything else DNS SANs; the first host is
        also the subject CN. Valid for a year unless ``not_after`` says otherwise.
        """
        if isinstance(hosts, str):
            hosts = (hosts,)
        if not hosts:
            raise ValueError("hosts must name at least one host")
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(
            hosts[0],
            eku=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
        )

    def issue_client(
        self,
        common_name: str,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType | None = None,
    ) -> IssuedCert:
        """Issue a clientAuth certificate, valid for a year unless ``not_after`` says
        otherwise (a date within 30 days gives one the library warns about; in the past,
        an expired one)."""
        return self._issue(
            common_name,
            eku=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=(),
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
        )

    def crl(
        self,
        revoked: Iterable[IssuedCert] = (),
        *,
        next_update_in: timedelta = timedelta(days=7),
    ) -> bytes:
        """A PEM CRL signed by this CA listing ``revoked``."""
        now = _now()
        self._crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._name)
            .last_update(now - _CLOCK_SKEW)
            .next_update(now + next_update_in)
            .add_extension(x509.CRLNumber(self._crl_number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial)
                .revocation_date(now - _CLOCK_SKEW)
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)
