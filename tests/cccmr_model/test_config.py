"""The config system: YAML into frozen dataclasses, base files, overrides, and one-line errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import setuptools

from cccmr_model.config import CONFIG_DIR, config_from_dict, config_to_dict, load_config, resolve_config_path
from cccmr_model.config.loader import packaged_configs
from cccmr_model.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_default_holds_paper_settings() -> None:
    cfg = load_config("default")
    assert cfg.model.encoder.arch == "swin3d_tiny"
    assert cfg.data.image_size == 224 and cfg.data.pixel_spacing_mm == pytest.approx(160 / 224)
    assert cfg.data.slices == {"cine_4ch": 1, "cine_sax": 3, "lge_sax": 6}
    assert cfg.train.focal_gamma == 2.0 and cfg.train.lr == pytest.approx(1e-3)
    assert [cfg.train.phases[p].epochs for p in ("pretrain", "fim", "fusion")] == [300, 600, 10]
    assert cfg.train.resample_factor == 4
    assert cfg.num_classes == 2


def test_tiny_inherits_from_default_and_shrinks() -> None:
    tiny = load_config(CONFIG_DIR / "tiny.yaml")
    assert tiny.data.image_size < 224
    assert tiny.train.focal_gamma == 2.0  # inherited
    assert tiny.model.encoder.depths is not None


def test_configs_are_frozen() -> None:
    cfg = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_override_and_round_trip() -> None:
    cfg = load_config("tiny", ["train.lr=3e-4", "task=subtyping"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.num_classes == 5
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["train.lrr=1"], "key 'train.lrr': unknown key"),
        (["train.lr=abc"], "key 'train.lr': expected a number"),
        (["train.batch_size=1"], "key 'train.batch_size'"),
        (["train.phases.pretrain.batch_size=1"], "batch_size must be at least 2"),
        (["task=regression"], "key 'task': must be one of"),
        (["data.slices.cine_4ch=2"], "key 'data.slices'"),
        (["model.encoder.pretrained.t1_map=x.pth"], "unknown sequences"),
        (["train.amp=3"], "key 'train.amp': expected true or false"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_a_phase_batch_size_overrides_the_train_batch_size() -> None:
    config = load_config("tiny", ["train.batch_size=6", "train.phases.pretrain.batch_size=4"])
    assert [config.train.phase_batch_size(p) for p in ("pretrain", "fim", "fusion")] == [4, 6, 6]


def test_bad_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+ invalid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)


def test_cli_config_typo_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("base: " + str(CONFIG_DIR / "tiny.yaml") + "\ntrain:\n  learning_rate: 0.1\n")
    result = subprocess.run(
        [sys.executable, "-m", "cccmr_model", "config", "--config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "typo.yaml" in lines[0] and "train.learning_rate" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("item", "key"),
    [
        ("model.encoder.depths=[1,x]", "model.encoder.depths[1]"),  # a list item of the override
        ("train={lr: abc}", "train.lr"),  # a key inside the override
        ("data.slices.cine_sax=0", "data.slices"),  # a check of the section the override sets
        ("federation.min_sites=99", "federation"),
    ],
)
def test_set_errors_blame_the_set_not_the_file(item: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("tiny", ["train.lr=1e-3", item])
    assert str(info.value).startswith(f"--set {item}: key '{key}'"), str(info.value)


def test_file_errors_still_blame_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {CONFIG_DIR / 'tiny.yaml'}\ntrain:\n  lr: abc\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: key 'train.lr'"):
        load_config(bad, ["train.batch_size=4", "data.frames=4"])


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf", "nan", "1e400"])
def test_non_finite_floats_are_refused(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--set train\.lr=.*: key 'train\.lr': expected a finite number"):
        load_config("tiny", [f"train.lr={value}"])
    file = tmp_path / "inf.yaml"
    file.write_text(f"base: {CONFIG_DIR / 'tiny.yaml'}\ntrain:\n  weight_decay: {value}\n")
    with pytest.raises(ConfigError, match=r"inf\.yaml: key 'train\.weight_decay': expected a finite number"):
        load_config(file)


def test_non_utf8_config_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: config is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_config(file)


def test_configs_are_package_data() -> None:
    """The YAMLs live in the repository's configs/, and setuptools ships them as `cccmr_model/configs/`
    (tests/cccmr_model/test_install.py builds the wheel and runs it)."""
    assert Path(__file__).resolve().parents[2] / "configs" == CONFIG_DIR
    assert packaged_configs() == ["default", "tiny"]
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools_table = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools_table["package-dir"]["cccmr_model.configs"] == "configs"
    assert setuptools_table["package-data"]["cccmr_model.configs"] == ["*.yaml"]


def test_pyproject_lists_every_package() -> None:
    """pyproject lists its packages (find_packages cannot see the mapped configs/): a new subpackage must be added."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(setuptools.find_packages(str(REPO_ROOT), include=["cccmr_model*", "server*", "client*"]))
    assert listed == found | {"cccmr_model.configs"}


@pytest.mark.parametrize("given", ["tiny", "configs/tiny.yaml"])
def test_config_names_resolve_from_any_folder(given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare name, or `configs/NAME.yaml` as Flower run configs written before the move say, is the packaged one."""
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(given) == CONFIG_DIR / "tiny.yaml"
    assert load_config(given).name == "cc-cmr-tiny"


def test_a_config_file_in_the_working_folder_wins_over_a_packaged_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text(f"base: {CONFIG_DIR / 'tiny.yaml'}\nname: mine\n")
    assert load_config("configs/tiny.yaml").name == "mine"
    (tmp_path / "tiny").mkdir()  # a folder of that name is not a config file
    assert load_config("tiny").name == "cc-cmr-tiny"
    with pytest.raises(ConfigError, match=r"config file not found \(packaged configs: default, tiny\)"):
        load_config("tinyy")
