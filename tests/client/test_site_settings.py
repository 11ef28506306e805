"""The ClientApp's node config and `cccmr doctor`'s site file name the same site through the same parser."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from cccmr_model.config import load_config
from cccmr_model.doctor import load_site_config
from cccmr_model.errors import ConfigError
from cccmr_model.site.config import SITE_KEYS, SiteSettings, read_site_file
from cccmr_model.site.data import site_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "site-config.example.toml"


def test_the_example_site_file_and_its_node_config_agree() -> None:
    node_config = {k: v for k, v in read_site_file(EXAMPLE).items() if k in SITE_KEYS}
    client = site_settings(node_config, {}, load_config("tiny"))
    doctor = load_site_config(EXAMPLE)
    assert client == SiteSettings(**{k: v for k, v in asdict(doctor).items() if k in asdict(client)})


def test_a_bad_flag_reads_the_same_on_both_paths(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("allow-outside-paths = false", 'allow-outside-paths = "maybe"')
    (tmp_path / "site.toml").write_text(text)
    with pytest.raises(ConfigError) as from_file:
        load_site_config(tmp_path / "site.toml")
    node = {"site": "anzhen", "data-path": "/d", "allow-outside-paths": "maybe"}
    with pytest.raises(ConfigError) as from_node:
        site_settings(node, {}, load_config("tiny"))
    assert str(from_file.value) == f"{tmp_path / 'site.toml'}: allow-outside-paths must be true or false, got 'maybe'"
    assert str(from_node.value) == "node config of site anzhen: allow-outside-paths must be true or false, got 'maybe'"


def test_simulation_site_goes_through_the_same_parser() -> None:
    node = {"partition-id": 0, "device": "cpu", "allow-outside-paths": "nope"}
    with pytest.raises(ConfigError, match=r"^node config of partition 0: allow-outside-paths must be true or false"):
        site_settings(node, {"sim-data-dir": "/d"}, load_config("tiny"))
