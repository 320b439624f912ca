"""Public API functions behind the CLI commands ``convert``, ``targets`` and ``doctor``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.console import log
from edgeconv.core.env import cpu_info, environment
from edgeconv.core.errors import EdgeconvError
from edgeconv.export.onnx_export import EXPORTERS, DynamicSpec
from edgeconv.profiles import list_profiles, load_profile
from edgeconv.targets.registry import all_targets


@dataclass
class ConvertOutcome:
    """One target × precision of a convert call: the artifact, or the error that stopped it."""

    profile: str
    precision: str
    out: Path
    artifact: Any = None
    error: EdgeconvError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def convert(model: str, *, targets: list[str], out: str | Path, precisions: list[str] | None = None,
            weights: str | None = None, model_args: dict[str, Any] | list[str] | None = None,
            inputs: list[str] | None = None, output_names: list[str] | None = None, opset: int = 17,
            exporters: tuple[str, ...] = EXPORTERS, dynamic: DynamicSpec | None = None, simplify: bool = True,
            calib: str | None = None, calib_size: int = 512, calib_seed: int = 0,
            preprocess: Preprocess | None = None, keep_fp32: tuple[str, ...] = (),
            options: dict[str, Any] | None = None, use_cache: bool = True,
            trust_checkpoint: bool = False) -> list[ConvertOutcome]:
    """Convert one model to each target (and precision) into ``out/<profile>-<precision>``.

    Model loading and export errors raise (nothing can be converted); a failing target is recorded in its
    outcome and the others go on.
    """
    from edgeconv.pipeline import convert_reference, make_calibration, prepare

    profiles = [load_profile(t) for t in targets]  # fail fast on an unknown target, before the slow export
    prep = prepare(model, weights=weights, model_args=model_args, inputs=inputs, output_names=output_names,
                   opset=opset, exporters=exporters, dynamic=dynamic, simplify=simplify,
                   trust_checkpoint=trust_checkpoint, use_cache=use_cache, preprocess=preprocess)
    calibration = None
    single = len(profiles) * max(1, len(precisions or [])) == 1
    outcomes: list[ConvertOutcome] = []
    for profile in profiles:
        for precision in precisions or [profile.precision]:
            dest = Path(out) / f"{profile.name}-{precision}"
            oc = ConvertOutcome(profile.name, precision, dest)
            try:
                cal = None
                if precision == "int8":
                    if calibration is None:
                        pp = preprocess
                        if pp is None and profile.preprocess:
                            pp = Preprocess.from_dict(profile.preprocess)
                        calibration = make_calibration(prep, calib, size=calib_size, seed=calib_seed,
                                                       preprocess=pp)
                    cal = calibration
                oc.artifact = convert_reference(prep, profile, out=dest, precision=precision, calibration=cal,
                                                keep_fp32=keep_fp32, options=options, use_cache=use_cache)
            except EdgeconvError as e:
                if single:  # one conversion asked for: its error is the command's error
                    raise
                e.target = e.target or profile.name
                log.error("%s", e.one_line())
                oc.error = e
            outcomes.append(oc)
    return outcomes


def list_targets() -> list[dict[str, Any]]:
    """Every profile with its backend's install state, how to install it and its precisions."""
    backends = all_targets()
    rows = []
    for name, prof in list_profiles().items():
        b = backends.get(prof.backend)
        installed = bool(b and b.available())
        runs, why = (b.runs_here() if b else (False, "backend not registered"))
        rows.append({"profile": name, "backend": prof.backend, "installed": installed, "runs_here": runs,
                     "why_not": None if runs else why, "install": f"pip install 'edgeconv[{b.extra if b else '?'}]'",
                     "precisions": [p for p in prof.precisions if not b or p in b.precisions],
                     "default_precision": prof.precision, "device": prof.device, "description": prof.description})
    return rows


def doctor() -> dict[str, Any]:
    """Versions, CPU flags and which backends convert and run here — read from this machine, not assumed."""
    env = environment()
    info = cpu_info()
    backends = {}
    for name, b in all_targets().items():
        runs, why = b.runs_here()
        backends[name] = {"installed": b.available(), "missing": b.missing(), "runs_here": runs,
                          "why_not": why or None, "versions": {k: v for k, v in b.versions().items() if v}}
    notes = []
    flags = set(info["flags"])
    if info["arch"] in ("x86_64", "AMD64") and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        notes.append("no VNNI/AMX: INT8 speed-ups on this CPU will be small; ORT int8 uses reduce_range")
    return {"environment": env, "backends": backends, "notes": notes,
            "profiles": sorted(list_profiles()), "log_level": log.level}
