"""Who a site is and where its data lives: the one parser of the keys a hospital sets for itself.

The same keys reach us two ways. The ClientApp gets Flower's node config, from the SuperNode's
`--node-config 'site="anzhen" data-path="/srv/cmr" ...'`. `cccmr doctor --site-config site.toml` reads a file
that holds these keys and its own extras (`read_site_file`). Both call `from_node_config`, so a value means the
same thing, and is refused in the same words, on either path. No flwr import here.

    site = "anzhen"                          # required
    data-path = "/srv/cmr/dicom"             # required: holds manifest.csv
    cache-path = "/var/cache/cccmr/anzhen"   # default $XDG_CACHE_HOME/cccmr/SITE (~/.cache/cccmr/SITE)
    device = "cuda"                          # default: the caller's (cpu, cuda, cuda:N, auto)
    allow-outside-paths = false              # true: the manifest may name series outside data-path
    worker-socket = "/run/cccmr/worker.sock" # optional: the warm site worker (`cccmr site-worker`) serves here;
                                             # the ClientApp forwards each message to it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cccmr_model.errors import ConfigError

SITE_KEYS = ("site", "data-path", "cache-path", "device", "allow-outside-paths", "worker-socket")


@dataclass(frozen=True)
class SiteSettings:
    name: str
    data_path: Path  # the site's DICOM export with its manifest.csv
    cache_path: Path  # the ingestion cache (preprocessed arrays), reused across rounds
    device: str
    allow_outside_paths: bool = False  # the manifest may name series outside data_path
    worker_socket: Path | None = None  # the warm site worker's UNIX socket; None: the ClientApp trains itself


def from_node_config(
    node_config: Mapping[str, Any], source: str, *, default_device: str, base: Path | None = None
) -> SiteSettings:
    """The site's settings from the shared keys of `node_config`; other keys are the caller's to check.

    `source` starts every error ("node config of site anzhen", a file's path). Paths expand `~`; a relative one
    is taken from `base` when given (a file's folder), else as written.
    """
    for key in ("site", "data-path"):
        if key not in node_config:
            hint = "the site's registered name" if key == "site" else "the folder holding manifest.csv"
            raise ConfigError(f'{source}: {key} is missing ({key}="...": {hint})')
    name = str(node_config["site"])
    cache = node_config.get("cache-path") or default_cache_root() / name
    return SiteSettings(
        name=name,
        data_path=site_path(node_config["data-path"], base),
        cache_path=site_path(cache, base),
        device=str(node_config.get("device", default_device)),
        allow_outside_paths=_flag(node_config, "allow-outside-paths", source),
        worker_socket=site_path(node_config["worker-socket"], base) if node_config.get("worker-socket") else None,
    )


def _flag(node_config: Mapping[str, Any], key: str, source: str) -> bool:
    """A true/false value (a TOML boolean, or the words true / false); False when absent."""
    value = node_config.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")


def read_site_file(path: str | Path) -> dict[str, Any]:
    """The key = value pairs of a site config file (.toml, or .yaml/.yml); ConfigError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: site config not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as exc:  # Python 3.10
            raise ConfigError(f"{path}: TOML needs Python 3.11+; write the site config as YAML") from exc
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    data = data if data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected key = value pairs at the top level")
    return data


def default_cache_root() -> Path:
    """Where a site's cache goes when cache-path is not set: $XDG_CACHE_HOME/cccmr, else ~/.cache/cccmr."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cccmr"


def site_path(value: object, base: Path | None) -> Path:
    """A path value: `~` expanded; a relative one taken from `base` (a site file's folder) when given."""
    path = Path(str(value)).expanduser()
    return base / path if base is not None else path
