"""Backend environments by name: the targets that declare one supply its spec.

Why through the targets: the pins belong with the backend that needs them (``targets/<backend>/``), so nothing
outside a backend's folder names its packages.  A target with ``environment = NAME`` provides
``environment_spec()``; two targets naming the same environment must supply the same spec.
"""

from __future__ import annotations

from typing import Any

from edgeconv.core.errors import ConfigError
from edgeconv.envs.spec import EnvSpec


def specs() -> dict[str, EnvSpec]:
    from edgeconv.targets.registry import all_targets

    found: dict[str, EnvSpec] = {}
    for target in all_targets().values():
        name = getattr(target, "environment", None)
        getter = getattr(target, "environment_spec", None)
        if not name or getter is None:
            continue
        spec = getter()
        if name in found and found[name] != spec:
            raise ConfigError(f"two targets declare backend environment '{name}' with different pins",
                              hint="give one of them its own environment name")
        found[name] = spec
    return dict(sorted(found.items()))


def get_spec(name: str) -> EnvSpec:
    known = specs()
    if name not in known:
        raise ConfigError(f"no backend environment named '{name}'",
                          hint=f"known: {', '.join(known) or 'none (no installed target declares one)'}")
    return known[name]


def env_status(name: str, *, deep: bool = False) -> dict[str, Any]:
    """One backend environment for doctor: ``exists``, ``ok``, ``problem`` (one line or None), ``path``,
    ``python``, ``bytes``, ``create_seconds``, ``versions``, ``requirements``; ``deep`` imports the toolkit in it."""
    from edgeconv.envs.manager import status

    return status(get_spec(name), deep=deep)


def all_status(*, deep: bool = False) -> dict[str, dict[str, Any]]:
    from edgeconv.envs.manager import status

    return {name: status(spec, deep=deep) for name, spec in specs().items()}
