"""A throwaway PKI for the local control plane, built with ``cryptography``.

Kubernetes authenticates every component and client with X.509 certificates signed by the CA
given to ``--client-ca-file``: the Common Name becomes the user name and each Organization a
group. Generating the whole set in-process (no ``openssl``/``cfssl`` binaries) keeps start-up fast
and lets tests mint extra identities, such as the operator's ServiceAccount user, or serving
certificates (webhooks) that the API server trusts because they share its CA.

ECDSA P-256 keys are used throughout: every Kubernetes component accepts them, and they are
generated in microseconds where RSA takes tens of milliseconds per key.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sampledb_localcluster.layout import DEFAULT_STATE_DIR, CertKeyPair, StateLayout

# Backdated so that a little clock skew between processes never makes a fresh cert "not yet valid".
_BACKDATE = datetime.timedelta(hours=1)
_VALIDITY = datetime.timedelta(days=365)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    """Write a private key readable only by its owner, as Go and OpenSSL both expect."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in orgs]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - _BACKDATE).not_valid_after(now + _VALIDITY)


def create_ca(out_dir: Path, cn: str = "sampledb-localcluster-ca") -> CertKeyPair:
    """Create a self-signed CA as ``ca.crt``/``ca.key`` in ``out_dir``.

    Args:
        out_dir: Where to write the files.
        cn: The CA's Common Name.

    Returns:
        The written pair.
    """
    key = _new_key()
    subject = _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _validity(builder).sign(key, hashes.SHA256())
    pair = CertKeyPair(out_dir / "ca.crt", out_dir / "ca.key")
    _write_cert(cert, pair.cert)
    _write_key(key, pair.key)
    return pair


def _load_ca(ca: CertKeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.key} is not an ECDSA key; only CAs made by create_ca() are supported")
    return cert, key


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca: CertKeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    out: CertKeyPair,
) -> CertKeyPair:
    ca_cert, ca_key = _load_ca(ca)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = _validity(builder).sign(ca_key, hashes.SHA256())
    _write_cert(cert, out.cert)
    _write_key(key, out.key)
    return out


def issue_client_cert(ca: CertKeyPair, cn: str, orgs: Sequence[str], out_dir: Path, name: str) -> CertKeyPair:
    """Issue a client certificate; the API server maps ``cn`` to the user and ``orgs`` to groups.

    Args:
        ca: The signing CA.
        cn: User name, e.g. ``admin``.
        orgs: Group names, e.g. ``["system:masters"]``.
        out_dir: Where to write ``<name>.crt`` and ``<name>.key``.
        name: File name stem.

    Returns:
        The written pair.
    """
    out = CertKeyPair(out_dir / f"{name}.crt", out_dir / f"{name}.key")
    return _issue(ca, _name(cn, orgs), ExtendedKeyUsageOID.CLIENT_AUTH, (), out)


def issue_serving_cert(
    cn: str,
    ip_sans: Sequence[str],
    dns_sans: Sequence[str],
    out_dir: Path,
    *,
    ca_cert: Path | None = None,
    ca_key: Path | None = None,
    name: str | None = None,
) -> tuple[Path, Path]:
    """Issue a TLS serving certificate signed by the local cluster's CA.

    Use it for anything the API server must trust, such as an admission webhook served from the
    test process: point the webhook's ``caBundle`` at the CA certificate.

    Args:
        cn: Common Name (also added as a DNS SAN when it is not an IP address).
        ip_sans: IP address SANs, e.g. ``["127.0.0.1"]``.
        dns_sans: DNS name SANs, e.g. ``["localhost", "my-svc.my-ns.svc"]``.
        out_dir: Where to write ``<name>.crt`` and ``<name>.key``.
        ca_cert: The CA certificate; defaults to the CA of the cluster in the default state folder
            (prefer passing ``LocalCluster.ca_cert``).
        ca_key: The CA private key; defaults like ``ca_cert`` (prefer ``LocalCluster.ca_key``).
        name: File name stem; ``cn`` with unsafe characters replaced when omitted.

    Returns:
        ``(certificate path, private key path)``.
    """
    if ca_cert is None or ca_key is None:
        default = StateLayout(DEFAULT_STATE_DIR)
        ca_cert = ca_cert or default.ca.cert
        ca_key = ca_key or default.ca.key
    stem = name or "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cn)
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
    dns = list(dns_sans)
    if not _is_ip(cn) and cn not in dns:
        dns.insert(0, cn)
    sans.extend(x509.DNSName(host) for host in dns)
    out = CertKeyPair(out_dir / f"{stem}.crt", out_dir / f"{stem}.key")
    pair = _issue(CertKeyPair(ca_cert, ca_key), _name(cn), ExtendedKeyUsageOID.SERVER_AUTH, sans, out)
    return pair.cert, pair.key


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def create_signing_key_pair(out_dir: Path, name: str = "sa") -> CertKeyPair:
    """Create the ServiceAccount token signing key pair as ``<name>.key`` and ``<name>.pub``.

    Args:
        out_dir: Where to write the files.
        name: File name stem.

    Returns:
        The pair; ``cert`` holds the path of the public key (not a certificate).
    """
    key = _new_key()
    pair = CertKeyPair(out_dir / f"{name}.pub", out_dir / f"{name}.key")
    _write_key(key, pair.key)
    pair.cert.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pair
