"""make-ca.sh and make-site-keys.sh: the CA, the SuperLink certificate's SANs, and the sites' ECDSA P-384 keys."""

from __future__ import annotations

import ipaddress
import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_superlink_certificate_carry_the_given_names(tmp_path: Path, run_script) -> None:
    out = tmp_path / "certs"
    names = ["superlink.cccmr.example.org", "203.0.113.10", "::1", "localhost"]
    result = run_script("make-ca.sh", "--out", out, "--days", "30", *names)
    assert result.returncode == 0, result.stderr
    ca, cert = _load(out / "ca.crt"), _load(out / "superlink.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["superlink.cccmr.example.org", "localhost"]
    ips = [ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("::1")]
    assert san.get_values_for_type(x509.IPAddress) == ips
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp384r1"
    for key in ("ca.key", "superlink.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", out / "ca.crt", out / "superlink.crt"], capture_output=True, check=False
    )
    assert verify.returncode == 0, verify.stderr


def test_existing_ca_is_reused_and_certificates_are_not_overwritten(tmp_path: Path, run_script) -> None:
    out = tmp_path / "certs"
    assert run_script("make-ca.sh", "--out", out, "127.0.0.1").returncode == 0
    ca_before = (out / "ca.crt").read_bytes()
    again = run_script("make-ca.sh", "--out", out, "127.0.0.1")
    assert again.returncode == 2 and "--force" in again.stderr
    forced = run_script("make-ca.sh", "--out", out, "--force", "10.0.0.5")
    assert forced.returncode == 0, forced.stderr
    assert (out / "ca.crt").read_bytes() == ca_before
    san = _load(out / "superlink.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]


def test_make_ca_rejects_bad_input(tmp_path: Path, run_script) -> None:
    no_names = run_script("make-ca.sh", "--out", tmp_path)
    assert no_names.returncode == 2 and "Usage" in no_names.stderr
    bad = run_script("make-ca.sh", "--out", tmp_path, "not a host!")
    assert bad.returncode == 2 and "neither a DNS name nor an IP" in bad.stderr
    assert not (tmp_path / "superlink.crt").exists()


def test_site_keys_are_ecdsa_p384_with_private_mode(tmp_path: Path, run_script) -> None:
    keys = tmp_path / "keys"
    result = run_script("make-site-keys.sh", "--out", keys, "anzhen")
    assert result.returncode == 0, result.stderr
    private = serialization.load_ssh_private_key((keys / "anzhen").read_bytes(), password=None)
    public = serialization.load_ssh_public_key((keys / "anzhen.pub").read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert public.public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE((keys / "anzhen").stat().st_mode) == 0o600
    again = run_script("make-site-keys.sh", "--out", keys, "anzhen")
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = run_script("make-site-keys.sh", "--out", keys, "../evil")
    assert bad.returncode == 2 and "letters, digits" in bad.stderr
