"""The search space of ``edgeconv tune``: profiles × precisions × the options that change speed, in the order they
are tried.

A candidate has two halves. Its *conversion* half (profile, precision, the backend options recorded in the
manifest, such as ncnn's fp16 arithmetic or OpenVINO's performance hint) decides the artifact; its *runtime* half
(threads, throughput streams) only how the harness runs it, so candidates that differ only there share one
artifact. Options vary one at a time from the profile's own values, not as a full product: the product grows
multiplicatively and most combinations only repeat what one knob already showed; the time spent goes to breadth
(every backend and precision at its defaults comes first).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from edgeconv.core.errors import ConfigError
from edgeconv.core.hashing import sha256_json
from edgeconv.profiles import Profile, list_profiles, load_profile

#: backend -> option -> (values to try, precisions they apply to (empty = all)[, values tried only in throughput
#: mode]). Only options that change speed and that the backend declares (checked against its schema before use, so a
#: renamed option is an error, not a no-op). OpenVINO's THROUGHPUT hint splits the cores into streams: one request
#: at a time then runs on a fraction of them (2x slower on 2 cores), so it is a candidate only with streams > 1.
KNOBS: dict[str, dict[str, tuple[tuple[Any, ...], ...]]] = {
    "ncnn": {"fp16_arithmetic": ((False, True), ("fp16",))},
    "onnxruntime": {"fp16_compute": (("half", "float"), ("fp16",))},
    "openvino": {"performance_hint": (("LATENCY", "THROUGHPUT"), (), ("THROUGHPUT",))},
    "tflite": {"layout": (("NCHW", "NHWC"), ())},
}


@dataclass(frozen=True)
class Candidate:
    """One point of the search: an artifact (profile, precision, options) run a given way (threads, streams)."""

    profile: Profile
    precision: str
    options: tuple[tuple[str, Any], ...] = ()
    threads: int | None = None  # None: the profile's
    streams: int = 0  # throughput mode when > 1

    @property
    def conversion_key(self) -> str:
        """Identity of the artifact: candidates with the same key share one conversion."""
        return sha256_json({"profile": self.profile.name, "path": self.profile.path, "precision": self.precision,
                            "options": dict(self.options)})[:12]

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.options)
        parts = [self.profile.name, self.precision, *([opts] if opts else []), f"t{self.threads or 'P'}"]
        if self.streams > 1:
            parts.append(f"s{self.streams}")
        return "/".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "profile": self.profile.name, "backend": self.profile.backend,
                "precision": self.precision, "options": dict(self.options), "threads": self.threads,
                "streams": self.streams}


@dataclass
class Space:
    """What was asked for and what was left out (with the reason), for the report."""

    candidates: list[Candidate] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)


def device_profiles(devices: list[str]) -> list[Profile]:
    """Profiles for ``--device`` values: a profile name or .toml path, or ``host`` (every installed backend's
    generic CPU profile that runs on this machine)."""
    from edgeconv.targets.registry import get_target

    out: list[Profile] = []
    for d in devices:
        if d != "host":
            out.append(load_profile(d))
            continue
        for name, p in sorted(list_profiles().items()):
            if name != p.backend or p.device.upper() != "CPU":
                continue
            try:
                t = get_target(p.backend)
            except Exception:  # noqa: BLE001 - a broken plug-in is not part of the host's space
                continue
            if t.available() and t.runs_here()[0]:
                out.append(p)
    seen: set[str] = set()
    uniq = [p for p in out if not (p.name in seen or seen.add(p.name))]  # type: ignore[func-returns-value]
    if not uniq:
        raise ConfigError(f"no usable profile for --device {' '.join(devices)}",
                          hint="pass a profile name (see `edgeconv targets`) or `host`")
    return uniq


def default_threads() -> list[int]:
    """One thread (what a busy or small device gives a model) and every core."""
    n = os.cpu_count() or 1
    return sorted({1, n}, reverse=True)


def candidates(profiles: list[Profile], *, precisions: list[str] | None = None, threads: list[int] | None = None,
               streams: list[int] | None = None, knobs: dict[str, dict[str, Any]] | None = None,
               skip_reason: Any = None) -> Space:
    """Every candidate for ``profiles``, defaults first.

    ``skip_reason(profile, precision)`` says why a precision cannot be made here (bf16 without bf16 units), so it
    is listed as excluded rather than failing; ``knobs`` replaces :data:`KNOBS`.
    """
    from edgeconv.targets.registry import get_target

    knobs = KNOBS if knobs is None else knobs
    threads = threads or default_threads()
    streams = streams or [0]
    space = Space()
    base: list[Candidate] = []
    variants: list[Candidate] = []
    for p in profiles:
        backend = get_target(p.backend)
        allowed = [x for x in backend.precisions if x in p.precisions]
        for prec in (precisions or allowed):
            if prec not in allowed:
                space.excluded.append({"profile": p.name, "precision": prec, "reason": f"no {prec} route"})
                continue
            why = skip_reason(p, prec) if skip_reason else None
            if why:
                space.excluded.append({"profile": p.name, "precision": prec, "reason": why})
                continue
            schema = backend.option_schema()
            option_sets: list[tuple[tuple[str, Any], ...]] = [()]
            throughput_only: set[tuple[str, Any]] = set()
            for opt, (values, precs, *rest) in (knobs.get(p.backend) or {}).items():
                if opt not in schema:
                    raise ConfigError(f"tune knob '{opt}' is not an option of {p.backend}",
                                      hint=f"options: {', '.join(sorted(schema))}")
                if precs and prec not in precs:
                    continue
                current = p.options.get(opt, schema[opt].default)
                option_sets += [((opt, v),) for v in values if v != current]
                throughput_only |= {(opt, v) for v in (rest[0] if rest else ())}
            for i, opts in enumerate(option_sets):
                for s in streams:
                    if s <= 1 and any(o in throughput_only for o in opts):
                        continue
                    for t in threads:
                        c = Candidate(p, prec, opts, t, s)
                        (base if i == 0 and s == streams[0] and t == threads[0] else variants).append(c)
    space.candidates = base + variants
    return space
