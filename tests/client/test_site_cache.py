"""The ClientApp's ingestion cache (issue 16, points 11 and 13): a manifest edit is seen without a manual
`cccmr ingest`, and a site may allow series outside its data root in its node config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.config import load_config
from cccmr_model.config.schema import DataConfig
from cccmr_model.errors import ConfigError
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, write_series
from cccmr_model.site.data import SiteSettings, ensure_cache, site_settings

CONFIG = DataConfig(image_size=32, field_of_view_mm=64.0, frames=4, min_frames=4)
HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"


def _cine(folder: Path, slices: int, seed: int) -> None:
    array = np.random.default_rng(seed).gamma(2.0, 80.0, (slices, 6, 20, 20)).astype(np.float32)
    geometry = Geometry.stack([-30.0, 10.0, 50.0], (0.6, 0.8, 0.0), (0.48, -0.36, -0.8), slices, 8.0)
    trigger = np.tile(np.arange(6) * 60.0, (slices, 1))
    write_series(folder, array, Sampling(geometry, (2.5, 2.5), 8.0, trigger))


@pytest.fixture
def site(tmp_path: Path) -> SiteSettings:
    data = tmp_path / "data"
    for index, name in enumerate(("s1", "s2")):
        _cine(data / name / "4ch", 1, 2 * index)
        _cine(data / name / "sax", 4, 2 * index + 1)
    (data / "manifest.csv").write_text(HEADER + "s1,1,,s1/4ch,s1/sax,\ns2,x,,s2/4ch,s2/sax,\n")
    return SiteSettings("anzhen", data, tmp_path / "cache", "cpu")


def _usable(site: SiteSettings) -> list[str]:
    index = json.loads((site.cache_path / "index.json").read_text())
    return sorted(s for s, entry in index["subjects"].items() if entry["usable"])


def test_a_corrected_manifest_is_ingested_on_the_next_message(site: SiteSettings) -> None:
    ensure_cache(site, CONFIG)
    assert _usable(site) == ["s1"]  # s2's label is bad: only s2 is skipped
    (site.data_path / "manifest.csv").write_text(HEADER + "s1,1,,s1/4ch,s1/sax,\ns2,0,,s2/4ch,s2/sax,\n")
    ensure_cache(site, CONFIG)
    assert _usable(site) == ["s1", "s2"]


def test_an_unchanged_manifest_reuses_the_stamp(site: SiteSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_cache(site, CONFIG)
    calls = []
    monkeypatch.setattr("cccmr_model.site.data.ingest_site", lambda *args, **kwargs: calls.append(args))
    ensure_cache(site, CONFIG)
    assert calls == []


def test_node_config_allows_series_outside_the_data_root(site: SiteSettings, tmp_path: Path) -> None:
    (site.data_path / "manifest.csv").write_text(HEADER + f"s1,1,,s1/4ch,{site.data_path / 's1' / 'sax'},\n")
    ensure_cache(site, CONFIG)
    assert _usable(site) == []
    config = load_config("tiny")
    node = {"site": "anzhen", "data-path": str(site.data_path), "cache-path": str(site.cache_path)}
    allowed = site_settings({**node, "allow-outside-paths": True}, {}, config)
    assert allowed.allow_outside_paths and not site_settings(node, {}, config).allow_outside_paths
    ensure_cache(allowed, CONFIG)
    assert _usable(allowed) == ["s1"]


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("true", True), (False, False), ("false", False)])
def test_allow_outside_paths_values(value: object, expected: bool) -> None:
    node = {"site": "anzhen", "data-path": "/d", "cache-path": "/c", "allow-outside-paths": value}
    assert site_settings(node, {}, load_config("tiny")).allow_outside_paths is expected


def test_a_bad_allow_outside_paths_value_is_one_line() -> None:
    node = {"site": "anzhen", "data-path": "/d", "cache-path": "/c", "allow-outside-paths": "maybe"}
    with pytest.raises(ConfigError, match=r"^node config of site anzhen: allow-outside-paths must be true or false"):
        site_settings(node, {}, load_config("tiny"))
