"""The one parser of a site's own keys (node config and site file alike): defaults, paths, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cccmr_model.errors import ConfigError
from cccmr_model.site.config import SiteSettings, from_node_config, read_site_file

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "site-config.example.toml"


def test_node_config_keys_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    site = from_node_config({"site": "anzhen", "data-path": "/d", "other": 1}, "node config", default_device="auto")
    assert site == SiteSettings("anzhen", Path("/d"), tmp_path / "cccmr" / "anzhen", "auto", False)


def test_paths_expand_home_and_follow_the_file(tmp_path: Path) -> None:
    node = {"site": "a", "data-path": "d", "cache-path": "~/c", "device": "cuda:1", "allow-outside-paths": "true"}
    site = from_node_config(node, "node config", default_device="cpu")
    assert site == SiteSettings("a", Path("d"), Path.home() / "c", "cuda:1", True)
    assert from_node_config(node, "site.toml", default_device="cpu", base=tmp_path).data_path == tmp_path / "d"


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"data-path": "/d"}, r'^site.toml: site is missing \(site="\.\.\.": '),
        ({"site": "a"}, r'^site.toml: data-path is missing \(data-path="\.\.\.": the folder holding manifest.csv\)$'),
        ({"site": "a", "data-path": "/d", "allow-outside-paths": 1}, r"^site.toml: allow-outside-paths must be true"),
    ],
)
def test_errors_are_one_line_naming_the_source_and_key(node: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        from_node_config(node, "site.toml", default_device="cpu")
    assert "\n" not in str(caught.value)


def test_site_file_toml_and_yaml(tmp_path: Path) -> None:
    assert read_site_file(EXAMPLE)["site"] == "anzhen"
    (tmp_path / "site.yaml").write_text("site: b\nallow-outside-paths: true\n")
    assert read_site_file(tmp_path / "site.yaml") == {"site": "b", "allow-outside-paths": True}
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="expected key = value pairs"):
        read_site_file(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="site config not found"):
        read_site_file(tmp_path / "absent.toml")
