"""Who a site is and what data it trains on: settings from the node config, the ingestion cache, the split.

Deployment: each hospital's `flower-supernode --node-config 'site="anzhen" data-path="/data/cmr"
cache-path="/var/cache/cccmr" device="cuda"'` (cache-path, device and allow-outside-paths optional;
`allow-outside-paths=true` lets the manifest name series outside the data path). Simulation: the partition id
picks the site from `federation.sites` and the run config's `sim-data-dir` / `sim-cache-dir` hold one folder per
site. Every message runs in a fresh process, so the cache on disk (not a module global) carries the ingestion
from one round to the next; a stamp file marks a cache built for this data path, this manifest (its content) and
these data settings, so an edited manifest is ingested again by the next message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from cccmr_model.config import config_to_dict
from cccmr_model.config.schema import DataConfig, ExperimentConfig
from cccmr_model.data import CachedDataset, ingest_site
from cccmr_model.data.cache import read_json
from cccmr_model.data.manifest import MANIFEST_NAME
from cccmr_model.engine.datasets import LabelledSubset
from cccmr_model.errors import ConfigError
from cccmr_model.splits import split_train_val

log = logging.getLogger("cccmr.client")

STAMP_NAME = "federation-cache.json"


@dataclass(frozen=True)
class SiteSettings:
    name: str
    data_path: Path  # the site's DICOM export with its manifest.csv
    cache_path: Path  # the ingestion cache (preprocessed arrays), reused across rounds
    device: str
    allow_outside_paths: bool = False  # the manifest may name series outside data_path


@dataclass(frozen=True)
class SiteData:
    train: Dataset
    val: Dataset


def site_settings(
    node_config: Mapping[str, Any], run_config: Mapping[str, Any], config: ExperimentConfig
) -> SiteSettings:
    """The site's settings from its node config (deployment) or partition id (simulation)."""
    device = str(node_config.get("device", config.train.device))
    if "site" in node_config:
        name = str(node_config["site"])
        if "data-path" not in node_config:
            raise ConfigError(f"node config of site {name}: data-path is missing (--node-config 'data-path=\"...\"')")
        data_path = Path(str(node_config["data-path"]))
        cache = node_config.get("cache-path") or _default_cache_root() / name
        outside = _flag(node_config, "allow-outside-paths", f"node config of site {name}")
        return SiteSettings(name, data_path, Path(str(cache)), device, outside)
    if "partition-id" in node_config:
        pid, sites = int(node_config["partition-id"]), config.federation.sites
        if pid >= len(sites):
            raise ConfigError(f"simulation partition {pid} has no site: federation.sites lists {len(sites)}")
        name = sites[pid]
        data_root = str(run_config.get("sim-data-dir", ""))
        if not data_root:
            raise ConfigError("run config: sim-data-dir must name the folder holding one data folder per site")
        cache_root = str(run_config.get("sim-cache-dir", "")) or str(Path(data_root) / ".cache")
        outside = _flag(node_config, "allow-outside-paths", f"node config of partition {pid}")
        return SiteSettings(name, Path(data_root) / name, Path(cache_root) / name, device, outside)
    raise ConfigError("node config names no site: start the SuperNode with --node-config 'site=\"NAME\" ...'")


def _flag(node_config: Mapping[str, Any], key: str, where: str) -> bool:
    """A true/false node-config value (a TOML boolean, or the words true / false); False when absent."""
    value = node_config.get(key, False)
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "false"):
        return str(value).strip().lower() == "true"
    raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")


def prepare_site(settings: SiteSettings, config: ExperimentConfig) -> SiteData:
    """Ingest on first use, then the seeded, label-stratified train/validation split of the site's subjects."""
    ensure_cache(settings, config.data)
    dataset = CachedDataset(settings.cache_path, data_config=config.data)
    train_idx, val_idx = split_train_val(dataset.labels, config.data.val_fraction, config.seed)
    return SiteData(LabelledSubset(dataset, train_idx), LabelledSubset(dataset, val_idx))


def _manifest_digest(data_path: Path) -> str | None:
    """sha256 of the manifest's bytes; None when it cannot be read (the ingestion then says why)."""
    try:
        return hashlib.sha256((data_path / MANIFEST_NAME).read_bytes()).hexdigest()
    except OSError:
        return None


def cache_stamp(settings: SiteSettings, data_config: DataConfig) -> dict[str, Any]:
    """What a cache was built from: the data path, its manifest's content, how that is read, the data settings."""
    return {
        "data_path": str(settings.data_path.resolve()),
        "manifest_sha256": _manifest_digest(settings.data_path),
        "allow_outside_paths": settings.allow_outside_paths,
        "data": config_to_dict(data_config),
    }


def ensure_cache(settings: SiteSettings, data_config: DataConfig) -> None:
    """Run the ingestion unless the cache already holds this data path and manifest at these data settings.

    A re-run redoes only the series whose files or settings changed (the cache's input hashes).
    """
    stamp_path = settings.cache_path / STAMP_NAME
    stamp = cache_stamp(settings, data_config)
    if stamp["manifest_sha256"] is not None and read_json(stamp_path) == stamp:
        return
    log.info("site %s: ingesting %s into %s", settings.name, settings.data_path, settings.cache_path)
    report = ingest_site(
        settings.data_path, settings.cache_path, data_config, allow_outside_paths=settings.allow_outside_paths
    )
    log.info("site %s: %d usable subjects of %d", settings.name, len(report.usable), report.subjects)
    tmp = stamp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    tmp.replace(stamp_path)


def _default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cccmr"
