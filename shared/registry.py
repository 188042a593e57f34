"""The arm registry: which arms exist, found by name. Imports nothing of the project.

An arm registers itself with ``@register_arm(name, ConfigClass)`` when its module is imported. Modules
are imported from the ``jepa_vs_vlm.arms`` entry-point group (installed packages, the two built-in
arms included: see pyproject.toml) and from the config's ``plugins`` (a module name or a path).
"""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable

ENTRY_POINT_GROUP = "jepa_vs_vlm.arms"


class RegistryError(ValueError):
    """An arm module that cannot be found or imported (the config loader reports it as a config error)."""


@dataclass
class ArmSpec:
    name: str
    arm_cls: type
    config_cls: type


_REGISTRY: dict[str, ArmSpec] = {}


def register_arm(name: str, config_cls: type) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in _REGISTRY and _REGISTRY[name].arm_cls is not cls:
            raise ValueError(f"arm name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = ArmSpec(name, cls, config_cls)
        return cls

    return deco


def load_plugins(extra: list[str] | tuple[str, ...] = ()) -> None:
    """Import the installed arms (entry points, once) and the ``plugins`` named by a config."""
    if not _INSTALLED:
        found = entry_points(group=ENTRY_POINT_GROUP)
        if not found:
            raise RegistryError(f"no arm is installed (entry-point group {ENTRY_POINT_GROUP!r} is empty): "
                                "install the project first, e.g. pip install -e .")
        for ep in found:
            try:
                ep.load()
            except ImportError as e:
                raise RegistryError(f"installed arm {ep.name!r} ({ep.value}) cannot be imported: {e}") from None
            _INSTALLED.append(ep.name)
    for plugin in extra:
        try:
            _import_plugin(plugin)
        except ImportError as e:
            raise RegistryError(f"plugins: cannot import arm module {plugin!r}: {e}") from None


_INSTALLED: list[str] = []


def _import_plugin(plugin: str) -> None:
    """A module name (``my_arms.arm``), or the path of a ``.py`` file or package folder, imported
    under its own name with its parent folder put on ``sys.path``."""
    if not (plugin.endswith(".py") or "/" in plugin or os.sep in plugin):
        importlib.import_module(plugin)
        return
    path = Path(plugin).expanduser().resolve()
    if not path.exists():
        raise ImportError(f"no such file or folder: {path}")
    name = path.stem if path.is_file() else path.name
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    module = importlib.import_module(name)
    if Path(module.__file__).resolve().parent not in (path.parent, path):
        raise ImportError(f"{name!r} resolves to {module.__file__}, not to {path}: rename one of them")


def registered_arms(plugins: list[str] | tuple[str, ...] = ()) -> dict[str, ArmSpec]:
    load_plugins(plugins)
    return dict(_REGISTRY)


def arm_config_classes() -> dict[str, type]:
    load_plugins()
    return {name: spec.config_cls for name, spec in _REGISTRY.items()}


def arm_class(name: str, plugins: list[str] | tuple[str, ...] = ()) -> type:
    load_plugins(plugins)
    if name not in _REGISTRY:
        raise KeyError(f"unknown arm {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name].arm_cls
