"""Pre-flight checks of a hospital site before it joins the federation (`cccmr doctor`).

The site config is a small TOML or YAML file with the site's own settings (the same ones its SuperNode gets as
`--node-config`, read by the same parser, `cccmr_model.site_config`), plus where its certificate and key live:

    site = "anzhen"
    data-path = "/srv/cmr/dicom"          # holds manifest.csv
    cache-path = "/var/cache/cccmr/anzhen"
    device = "cuda"                       # cpu, cuda or cuda:N
    superlink = "superlink.cccmr.example.org:8000"
    root-certificate = "/etc/cccmr/certs/ca.crt"
    private-key = "/etc/cccmr/keys/anzhen"
    config = "default"                    # optional: experiment config whose preprocessing the dry ingest uses
    allow-outside-paths = false           # optional: manifest paths may leave data-path (as the node config)
    worker-socket = "/run/cccmr/anzhen/worker.sock"  # optional: the warm site worker must answer there

Every check returns a `Check` (ok / warn / fail, what was found, how to fix it). Nothing is written except a
probe file in the cache path; no patient data leaves the process. No flwr import here: this runs before Flower.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from cccmr_model.errors import CccmrError, ConfigError
from cccmr_model.site.config import SITE_KEYS, SiteSettings, from_node_config, read_site_file, site_path

if TYPE_CHECKING:
    from cccmr_model.data.manifest import Manifest

OK, WARN, FAIL = "ok", "warn", "fail"
REQUIRED_KEYS = ("site", "data-path", "cache-path", "superlink", "root-certificate", "private-key")
OPTIONAL_KEYS = {"device": "cpu", "config": "default", "connect-timeout": 5.0, "allow-outside-paths": False}
EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True, kw_only=True)
class SiteConfig(SiteSettings):
    """The site file: the node-config keys (`SiteSettings`, one parser for both) plus the doctor's own."""

    superlink: str  # HOST:PORT
    root_certificate: Path
    private_key: Path
    config: str = "default"
    connect_timeout: float = 5.0

    @property
    def site(self) -> str:
        """The site's name (the file's `site` key)."""
        return self.name

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.superlink.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""


def load_site_config(path: str | Path) -> SiteConfig:
    """Read a site config (.toml, or .yaml/.yml); ConfigError for a missing file, unknown or missing keys."""
    path = Path(path)
    raw = read_site_file(path)
    unknown = sorted(set(raw) - set(SITE_KEYS) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if unknown or missing:
        raise ConfigError(f"{path}: unknown keys {unknown}, missing keys {missing} (keys: {', '.join(REQUIRED_KEYS)})")
    values = {**OPTIONAL_KEYS, **raw}
    superlink = str(values["superlink"])
    host, _, port = superlink.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{path}: superlink must be HOST:PORT, got {superlink!r}")
    base = path.resolve().parent
    settings = from_node_config(values, str(path), default_device=str(OPTIONAL_KEYS["device"]), base=base)
    return SiteConfig(
        **asdict(settings),
        superlink=superlink,
        root_certificate=site_path(values["root-certificate"], base),
        private_key=site_path(values["private-key"], base),
        config=str(values["config"]),
        connect_timeout=float(values["connect-timeout"]),
    )


# ---- individual checks --------------------------------------------------------------------------------------


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if (3, 10) <= sys.version_info[:2] <= (3, 12):
        return Check("python", OK, f"Python {version}")
    return Check("python", FAIL, f"Python {version}", "use Python 3.10-3.12 (the project's venv)")


def check_torch(device: str) -> Check:
    try:
        import torch
    except ImportError as exc:
        return Check("torch", FAIL, f"torch not importable: {exc}", "install the project: pip install -e .")
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    found = f"torch {torch.__version__}, CUDA {'available, ' + str(count) + ' device(s)' if cuda else 'not available'}"
    if device == "cpu":
        note = " (device = cpu: training will be slow; set device = cuda if this host has a GPU)" if cuda else ""
        return Check("torch + device", OK, found + note)
    if not device.startswith("cuda"):
        return Check("torch + device", FAIL, f"{found}; device {device!r} unknown", "set device to cpu, cuda or cuda:N")
    index = int(device.partition(":")[2] or 0)
    if not cuda:
        fix = "install the NVIDIA driver and a CUDA build of torch, or set device = cpu"
        return Check("torch + device", FAIL, f"{found}; device {device} requested", fix)
    if index >= count:
        return Check("torch + device", FAIL, f"{found}; {device} does not exist", f"use cuda:0..cuda:{count - 1}")
    name = torch.cuda.get_device_name(index)
    return Check("torch + device", OK, f"{found}; {device} = {name}")


def check_data(site: SiteConfig) -> list[Check]:
    """Data path, manifest, and a dry ingest (read + preprocess in memory) of the first subject's series."""
    if not site.data_path.is_dir():
        return [Check("data path", FAIL, f"{site.data_path} is not a directory", "set data-path to the DICOM root")]
    checks = [Check("data path", OK, str(site.data_path))]
    try:
        from cccmr_model.data import load_series, preprocess_series
        from cccmr_model.data.manifest import load_manifest
    except ImportError as exc:
        return [*checks, Check("manifest", FAIL, f"cccmr_model.data not importable: {exc}", "reinstall the project")]
    try:
        manifest = load_manifest(site.data_path, allow_outside_paths=site.allow_outside_paths)
    except CccmrError as exc:
        return [*checks, Check("manifest", FAIL, str(exc), "write manifest.csv (draft: cccmr ingest --discover)")]
    checks.append(_manifest_check(manifest))
    if not manifest.entries:
        return checks
    first = manifest.entries[0]
    try:
        from cccmr_model.config import load_config

        data_config = load_config(site.config).data
        from cccmr_model.data.localise import choose_centre
        from cccmr_model.sequences import CINE_SAX

        shapes, sax_point, sax_axis = [], None, None
        for sequence in sorted(first.series, key=lambda name: name != CINE_SAX):  # the SAX heart point first
            ref = first.series[sequence]
            if ref is None:
                continue
            series = load_series(ref.path, ref.series_uid)
            centre = choose_centre(series, sequence, data_config.crop, sax_point)
            result = preprocess_series(series, sequence, data_config, centre.point_mm, sax_axis)
            if sequence == CINE_SAX and centre.ok:  # as ingestion carries them to the 4CH and LGE
                sax_point, sax_axis = centre.point_mm, result.slice_normal
            shapes.append(f"{sequence} {series.num_slices}x{series.num_frames}")
    except CccmrError as exc:
        fix = "fix or replace this series (cccmr ingest reports every subject)"
        return [*checks, Check("dry ingest", FAIL, f"first subject {first.subject_id}: {exc}", fix)]
    detail = f"first subject {first.subject_id}: {', '.join(shapes)} (slices x frames) read and preprocessed"
    return [*checks, Check("dry ingest", OK, detail)]


def _manifest_check(manifest: Manifest) -> Check:
    """OK with the subject counts; WARN naming the first refused row (each skips only its subject); FAIL if none."""
    entries, problems = manifest.entries, manifest.problems
    sick = sum(e.label for e in entries)
    detail = f"{len(entries)} subjects ({sick} cardiomyopathy, {len(entries) - sick} healthy)"
    if not problems:
        return Check("manifest", OK, detail)
    detail += f"; {len(problems)} row{'s' * (len(problems) > 1)} rejected, first: {problems[0].reason}"
    fix = (
        "fix those rows (each skips only its subject; `cccmr ingest` lists them all); a series outside data-path "
        "needs allow-outside-paths = true here and in the node config"
    )
    return Check("manifest", WARN if entries else FAIL, detail, fix)


def check_cache(site: SiteConfig) -> Check:
    try:
        site.cache_path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=site.cache_path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "cache path", FAIL, f"{site.cache_path} not writable: {exc}", "create it, owned by the service user"
        )
    return Check("cache path", OK, f"{site.cache_path} writable")


def _load_certificate(path: Path):
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def _expiry_check(name: str, cert, fix: str) -> Check | None:
    now = datetime.now(timezone.utc)
    if cert.not_valid_before_utc > now:
        return Check(name, FAIL, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d}", "check this host's clock")
    if cert.not_valid_after_utc <= now:
        return Check(name, FAIL, f"expired on {cert.not_valid_after_utc:%Y-%m-%d}", fix)
    if cert.not_valid_after_utc - now < EXPIRY_WARNING:
        return Check(name, WARN, f"expires on {cert.not_valid_after_utc:%Y-%m-%d}", fix)
    return None


def check_root_certificate(site: SiteConfig) -> Check:
    from cryptography import x509

    name, path = "root certificate", site.root_certificate
    if not path.is_file():
        return Check(name, FAIL, f"{path} not found", "copy the consortium ca.crt from the coordinating site")
    try:
        cert = _load_certificate(path)
    except ValueError as exc:
        return Check(name, FAIL, f"{path} is not a PEM certificate: {exc}", "copy ca.crt again (PEM text)")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return Check(name, FAIL, f"{path} is not a CA certificate", "use ca.crt, not the SuperLink's own certificate")
    expiry = _expiry_check(name, cert, "ask the coordinating site for the renewed consortium CA")
    subject = cert.subject.rfc4514_string()
    return expiry or Check(name, OK, f"{subject}, valid until {cert.not_valid_after_utc:%Y-%m-%d}")


def check_private_key(site: SiteConfig) -> Check:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    name, path = "site key", site.private_key
    if not path.is_file():
        fix = f"create it: deploy/make-site-keys.sh {site.name}, and send {path.name}.pub to the coordinator"
        return Check(name, FAIL, f"{path} not found", fix)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return Check(name, FAIL, f"{path} is readable by other users (mode {mode:o})", f"chmod 600 {path}")
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        return Check(name, FAIL, f"{path} is not an unencrypted OpenSSH private key: {exc}", "make it again")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        return Check(name, FAIL, f"{path} is not an ECDSA P-384 key", "make it with deploy/make-site-keys.sh")
    public = path.with_name(path.name + ".pub")
    note = "" if public.is_file() else f" ({public.name} missing: the coordinator needs it to register the site)"
    return Check(name, OK if not note else WARN, f"{path}: ECDSA P-384, mode {mode:o}{note}")


def check_superlink(site: SiteConfig) -> list[Check]:
    """TCP reachability, then a TLS handshake that verifies the SuperLink certificate (chain, dates, hostname)."""
    host, port = site.host_port
    try:
        with socket.create_connection((host, port), timeout=site.connect_timeout):
            pass
    except OSError as exc:
        fix = "check the address, DNS, the hospital firewall (outbound TCP) and that the SuperLink runs"
        return [Check("superlink reachable", FAIL, f"{host}:{port}: {exc}", fix)]
    checks = [Check("superlink reachable", OK, f"TCP connect to {host}:{port}")]
    if not site.root_certificate.is_file():
        return checks
    context = ssl.create_default_context(cafile=str(site.root_certificate))
    try:
        with (
            socket.create_connection((host, port), timeout=site.connect_timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            version = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return [
            *checks,
            Check(
                "superlink certificate",
                FAIL,
                f"{exc.verify_message}; {_peer_summary(host, port, site)}",
                _certificate_fix(exc.verify_message, host),
            ),
        ]
    except (ssl.SSLError, OSError) as exc:
        fix = "the SuperLink must run with TLS (start-superlink.sh without --insecure)"
        return [*checks, Check("superlink certificate", FAIL, f"TLS handshake failed: {exc}", fix)]
    return [*checks, Check("superlink certificate", OK, f"{version}, {_peer_summary(host, port, site)}")]


def _peer_summary(host: str, port: int, site: SiteConfig) -> str:
    """The SuperLink certificate's SANs and expiry, fetched without verification (for the message only)."""
    from cryptography import x509

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=site.connect_timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        names += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
        return f"SuperLink certificate SANs {names}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    except (OSError, ValueError, x509.ExtensionNotFound) as exc:
        return f"(could not read the SuperLink certificate: {exc})"


def _certificate_fix(message: str, host: str) -> str:
    if "mismatch" in message.lower():
        return f"connect by a name in the SANs, or ask the coordinator to reissue: make-ca.sh --force ... {host}"
    if "expired" in message.lower():
        return "ask the coordinator to reissue the SuperLink certificate (make-ca.sh --force)"
    return "root-certificate must be the consortium ca.crt that signed the SuperLink certificate"


def _worker_start_fix(site: SiteConfig) -> str:
    return (
        f"start it: systemctl start cccmr-site-worker@{site.name} (Docker: docker compose -f compose.site.yaml "
        "up -d site-worker); its log says why it stopped"
    )


def check_worker(site: SiteConfig) -> list[Check]:
    """With `worker-socket` set: the socket is 600 and the warm site worker answers a ping with this install's app
    fingerprint. Nothing to check without it (the ClientApp trains in its own process)."""
    path = site.worker_socket
    if path is None:
        return []
    name = "site worker"
    try:
        info = path.lstat()
    except FileNotFoundError:
        return [Check(name, FAIL, f"no socket at {path}: the worker is not running", _worker_start_fix(site))]
    except OSError as exc:
        return [Check(name, FAIL, f"cannot see {path}: {exc}", "run cccmr doctor as the site's user (cccmr)")]
    if not stat.S_ISSOCK(info.st_mode):
        return [Check(name, FAIL, f"{path} is not a socket", f"remove it; the worker makes its own ({path})")]
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        detail = f"{path} is open to other users (mode {mode:o}): they could send it messages"
        return [Check(name, FAIL, detail, f"restart the worker, which makes it 600, or chmod 600 {path}")]
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        detail = f"{path} belongs to uid {info.st_uid}, this check runs as uid {os.geteuid()}"
        fix = "run cccmr doctor as the user of the SuperNode and the worker (cccmr), who alone may connect"
        return [Check(name, FAIL, detail, fix)]
    return [_ping_worker(site, path)]


def _ping_worker(site: SiteConfig, path: Path) -> Check:
    """One ping over the channel: OK with the worker's pid, or what is wrong (down, busy, other code)."""
    from cccmr_model.channel import ChannelError, app_fingerprint, connect, receive, send

    name, mine = "site worker", app_fingerprint()
    try:
        sock = connect(path, site.connect_timeout)
    except ChannelError as exc:
        return Check(name, FAIL, str(exc), _worker_start_fix(site))
    with sock:
        try:
            send(sock, {"kind": "ping", "fingerprint": mine})
            reply, _ = receive(sock)
        except TimeoutError:
            detail = f"{path}: no reply within {site.connect_timeout:g} s: busy with a round's message, or hung"
            fix = f"check again between rounds; if it persists: systemctl restart cccmr-site-worker@{site.name}"
            return Check(name, WARN, detail, fix)
        except (ChannelError, OSError) as exc:
            return Check(name, FAIL, f"{path}: no answer to a ping ({exc})", _worker_start_fix(site))
    if "error" not in reply:
        pid = reply.get("metrics", {}).get("pid")
        return Check(name, OK, f"{path}: pid {pid}, mode 600, app {mine}")
    theirs = reply.get("fingerprint")
    if theirs is None:
        return Check(name, FAIL, f"{path}: {reply['error']}", _worker_start_fix(site))
    detail = f"app fingerprint mismatch: this installation is {mine}, the worker runs {theirs}"
    fix = (
        f"restart it on the installed release: systemctl restart cccmr-site-worker@{site.name} "
        "(Docker: docker compose -f compose.site.yaml up -d --build site-worker)"
    )
    return Check(name, FAIL, detail, fix)


# ---- the checklist ------------------------------------------------------------------------------------------


def run_checks(site: SiteConfig) -> list[Check]:
    """Every check in order. A check that cannot import what it needs (a broken torch or numpy install, which
    `check_torch` reports) fails with that reason, and the checks after it still run."""
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("python", check_python),
        ("torch + device", lambda: check_torch(site.device)),
        ("dry ingest", lambda: check_data(site)),
        ("cache path", lambda: check_cache(site)),
        ("site worker", lambda: check_worker(site)),
        ("root certificate", lambda: check_root_certificate(site)),
        ("site key", lambda: check_private_key(site)),
        ("superlink reachable", lambda: check_superlink(site)),
    ]
    checks: list[Check] = []
    for name, step in steps:
        try:
            result = step()
        except ImportError as exc:
            result = Check(name, FAIL, f"could not run: {exc}", "install the project: pip install -e .")
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def format_checklist(site: SiteConfig, checks: list[Check]) -> str:
    marks = {OK: "[ OK ]", WARN: "[WARN]", FAIL: "[FAIL]"}
    lines = [f"cccmr doctor: site {site.name}, SuperLink {site.superlink}"]
    for check in checks:
        lines.append(f"{marks[check.status]} {check.name}: {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"       fix: {check.fix}")
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    verdict = "ready to join" if not failed else f"NOT ready: {failed} blocking problem(s)"
    lines.append(f"{verdict}; {warned} warning(s)")
    return "\n".join(lines)
