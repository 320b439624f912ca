"""Backend environments: toolkits that cannot share edgeconv's environment run in a pinned venv of their own.

A target names one (``Target.environment = "rknn"``) and supplies its spec (``environment_spec()`` → ``EnvSpec``).
``manager`` creates it on first use under ``$EDGECONV_CACHE/envs/<name>-<sha256 of the spec>`` and finds it
afterwards; ``client`` runs jobs and inference sessions in it through the self-contained ``worker.py`` over a
``transport`` (here ``LocalTransport`` with the environment's interpreter; a device is the same worker over SSH).

Layers: ``spec``, ``manager``, ``transport``, ``client`` and ``worker`` import only ``edgeconv.core``; ``registry``
(name → spec, used by the CLI and doctor) reads the target registry.
"""

from __future__ import annotations

from edgeconv.envs.spec import EnvSpec

__all__ = ["EnvSpec", "env_status"]


def env_status(name: str, *, deep: bool = False) -> dict:
    """Doctor's view of one backend environment (see ``edgeconv.envs.registry.env_status``)."""
    from edgeconv.envs.registry import env_status as _status

    return _status(name, deep=deep)
