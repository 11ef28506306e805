"""make-ca.sh and make-site-keys.sh: the CA, the SuperLink certificate's SANs, and the sites' ECDSA P-384 keys."""

from __future__ import annotations

import ipaddress
import os
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


def test_make_ca_shows_openssl_errors(tmp_path: Path, run_script) -> None:
    """A failing openssl step is named, with openssl's own message, not a silent exit."""
    out = tmp_path / "certs"
    assert run_script("make-ca.sh", "--out", out, "127.0.0.1").returncode == 0
    (out / "ca.key").write_text("not a key\n")
    result = run_script("make-ca.sh", "--out", out, "--force", "127.0.0.1")
    assert result.returncode == 2
    assert "openssl failed to sign the superlink certificate" in result.stderr
    assert "Could not read CA private key" in result.stderr  # openssl's own words
    assert not list(out.glob("*.srl"))


def test_make_ca_leaves_no_half_ca_when_openssl_fails(tmp_path: Path, run_script) -> None:
    real = subprocess.run(["bash", "-c", "command -v openssl"], capture_output=True, text=True, check=True).stdout
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "openssl"
    fake.write_text(
        f'#!/usr/bin/env bash\nif [ "$1" = req ]; then echo "fake openssl: no entropy today" >&2; exit 1; fi\n'
        f'exec {real.strip()} "$@"\n'
    )
    fake.chmod(0o755)
    out = tmp_path / "certs"
    result = run_script("make-ca.sh", "--out", out, "127.0.0.1", PATH=f"{fake_bin}:{os.environ['PATH']}")
    assert result.returncode == 2
    assert "openssl failed to create the CA certificate" in result.stderr
    assert "fake openssl: no entropy today" in result.stderr
    assert not (out / "ca.key").exists() and not (out / "ca.crt").exists()
    again = run_script("make-ca.sh", "--out", out, "127.0.0.1")  # nothing half-made blocks a second try
    assert again.returncode == 0, again.stderr
