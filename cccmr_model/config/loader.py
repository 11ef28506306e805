"""Load YAML experiment configs into the frozen dataclasses of `schema.py`.

A config file may start from another with `base: other.yaml` (resolved relative to the file); its keys are merged
over the base recursively. Command-line overrides `key.sub=value` are parsed as YAML scalars and applied last.
Every problem raises `ConfigError` with one line naming the file, the key and what is wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.errors import ConfigError, not_utf8


def _config_dir() -> Path:
    """Where the packaged configs (`default`, `tiny`) are: the repository's `configs/` in a source checkout or an
    editable install, `cccmr_model/configs/` in an installed wheel (pyproject maps the one onto the other)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


# The packaged configs, found from any folder, so a bare name works anywhere.
CONFIG_DIR = _config_dir()
T = TypeVar("T")


def packaged_configs() -> list[str]:
    """The names of the configs shipped with the package, e.g. ['default', 'tiny']."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file as given; else a packaged config, named bare (`tiny`) or as `configs/tiny.yaml`.

    `configs/NAME.yaml` is the configs' place in the repository; Flower run configs (`config-path`) and scripts
    name them so, and the name also works from another folder, or after `pip install .` without the checkout.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = None
    if path.suffix == "":
        name = str(name_or_path)
    elif not path.is_absolute() and path.parts[:-1] == ("configs",) and path.suffix == ".yaml":
        name = path.stem
    if name is not None and (CONFIG_DIR / f"{name}.yaml").is_file():
        return CONFIG_DIR / f"{name}.yaml"
    raise ConfigError(f"{path}: config file not found (packaged configs: {', '.join(packaged_configs())})")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read a YAML config (following `base:`), apply `key=value` overrides, and build the dataclass tree."""
    file = resolve_config_path(path)
    raw = _read_with_bases(file, seen=())
    overrides = list(overrides)
    for item in overrides:
        _apply_override(raw, item, file)
    try:
        return build_dataclass(ExperimentConfig, raw, file=str(file))
    except ConfigError as exc:
        item = _blamed_override(str(exc), str(file), overrides)
        if item is not None:  # name the override, not the file, when the bad value came from --set
            raise ConfigError(str(exc).replace(f"{file}:", f"--set {item}:", 1)) from None
        raise


def _blamed_override(message: str, file: str, overrides: list[str]) -> str | None:
    """The last `--set` whose key is the error's key, inside it (a list item, a sub-key) or under it (a check of
    the section it belongs to); None when the error is the file's alone."""
    match = re.match(rf"{re.escape(file)}: key '([^']+)'", message)
    if match is None:
        return None
    bad = match.group(1)
    for item in reversed(overrides):
        key = item.split("=", 1)[0].strip()
        if bad == key or bad.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{bad}."):
            return item
    return None


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Build a config from a plain mapping (as stored beside a checkpoint or release)."""
    return build_dataclass(ExperimentConfig, dict(data), file=source)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The fully resolved config as plain YAML-safe data (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def dump_config(config: Any) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: config is not {not_utf8(exc)}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: top level must be a mapping, got {type(data).__name__}")
    return data


def _read_with_bases(file: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    file = file.resolve()
    if file in seen:
        raise ConfigError(f"{file}: key 'base': circular base chain")
    data = _read_yaml(file)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{file}: key 'base': expected a file name, got {type(base).__name__}")
    base_file = (file.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_file.exists():
        raise ConfigError(f"{file}: key 'base': file {base_file} not found")
    return _deep_merge(_read_with_bases(base_file, (*seen, file)), data)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], item: str, file: Path) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key=value (e.g. train.lr=3e-4)")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {item}: value is not valid YAML") from None
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item}: key '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def build_dataclass(cls: type[T], data: Any, *, file: str, key: str = "") -> T:
    """Build dataclass `cls` from `data`, checking every key and type; errors name `file` and the dotted key."""
    where = f"{file}: key '{key}'" if key else f"{file}:"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        bad = f"{key}.{unknown[0]}" if key else str(unknown[0])
        raise ConfigError(f"{file}: key '{bad}': unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        sub = f"{key}.{name}" if key else name
        kwargs[name] = _convert(hints[name], value, file=file, key=sub)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        first = re.match(r"\w*", message).group(0)
        if first in fields:  # "batch_size must be ..." -> key 'train.batch_size': must be ...
            bad = f"{key}.{first}" if key else first
            raise ConfigError(f"{file}: key '{bad}': {message}") from None
        raise ConfigError(f"{where} {message}") from None


def _convert(tp: Any, value: Any, *, file: str, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    err = f"{file}: key '{key}':"
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, file=file, key=key)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{err} expected {_type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{err} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, file=file, key=key)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{err} expected a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, file=file, key=f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{err} expected a list of {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, file=file, key=f"{key}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{err} expected a mapping, got {_describe(value)}")
        return {str(k): _convert(args[1], v, file=file, key=f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{err} expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{err} expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # YAML 1.1 reads 1e-3 as a string: the number it clearly is
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{err} expected a number, got {_describe(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{err} expected a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{err} expected a string, got {_describe(value)}")
        return value
    raise ConfigError(f"{err} unsupported type {tp!r}")  # a schema bug, not a user error


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _type_name(tp: Any) -> str:
    return typing._type_repr(tp) if hasattr(typing, "_type_repr") else str(tp)  # type: ignore[attr-defined]
