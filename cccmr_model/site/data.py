"""Who a site is and what data it trains on: settings from the node config, the ingestion cache, the split.

Deployment: each hospital's `flower-supernode --node-config 'site="anzhen" data-path="/data/cmr"
cache-path="/var/cache/cccmr" device="cuda"'` (cache-path, device and allow-outside-paths optional;
`allow-outside-paths=true` lets the manifest name series outside the data path), parsed by
`cccmr_model.site_config` as `cccmr doctor` parses its site file. Simulation: the partition id picks the site
from `federation.sites` and the run config's `sim-data-dir` / `sim-cache-dir` hold one folder per site. Every
message runs in a fresh process, so the cache on disk (not a module global) carries the ingestion from one round
to the next; a stamp file marks a cache built for this data path, this manifest (its content) and these data
settings, so an edited manifest is ingested again by the next message.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from cccmr_model.site.config import SiteSettings, from_node_config
from cccmr_model.splits import split_site

log = logging.getLogger("cccmr.client")

STAMP_NAME = "federation-cache.json"


@dataclass(frozen=True)
class SiteData:
    train: Dataset
    val: Dataset


def site_settings(
    node_config: Mapping[str, Any], run_config: Mapping[str, Any], config: ExperimentConfig
) -> SiteSettings:
    """The site's settings from its node config (deployment) or partition id (simulation)."""
    device = config.train.device  # when the node config sets none
    if "site" in node_config:
        return from_node_config(node_config, f"node config of site {node_config['site']}", default_device=device)
    if "partition-id" in node_config:
        pid, sites = int(node_config["partition-id"]), config.federation.sites
        if pid >= len(sites):
            raise ConfigError(f"simulation partition {pid} has no site: federation.sites lists {len(sites)}")
        name = sites[pid]
        data_root = str(run_config.get("sim-data-dir", ""))
        if not data_root:
            raise ConfigError("run config: sim-data-dir must name the folder holding one data folder per site")
        cache_root = str(run_config.get("sim-cache-dir", "")) or str(Path(data_root) / ".cache")
        site = {"site": name, "data-path": Path(data_root) / name, "cache-path": Path(cache_root) / name}
        return from_node_config({**node_config, **site}, f"node config of partition {pid}", default_device=device)
    raise ConfigError("node config names no site: start the SuperNode with --node-config 'site=\"NAME\" ...'")


def prepare_site(settings: SiteSettings, config: ExperimentConfig) -> SiteData:
    """Ingest on first use, then the seeded, stratified train/validation split of the site's subjects (`split_site`)."""
    ensure_cache(settings, config.data)
    dataset = CachedDataset(settings.cache_path, data_config=config.data)
    train_idx, val_idx = split_site(dataset, config)
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
