"""The fast path of a repeated plan: decided from file hashes and the plan alone, before torch or any backend is
imported (``edgeconv convert`` on unchanged inputs: ~0.5 s instead of a cold conversion).

The key of a row covers the model's source files and weights, the export settings, the profile and tolerance,
the options, the calibration and evaluation data by content, the task spec's files, and the versions of every
distribution that can change what a conversion produces; a hit still goes through the cache's re-hashing of every
file. A miss falls through to the full plan (``edgeconv.plan``), which records the key for next time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core import cache
from edgeconv.targets.registry import get_target

if TYPE_CHECKING:
    from edgeconv.plan import PlanRow

#: Distributions whose versions can change what a conversion produces (besides each backend's own declaration).
FRONTEND_DISTS = ("torch", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxruntime", "numpy", "pillow")
_MAX_CODE_FILES = 400


def _tree_hash(files: list[Path], root: Path) -> str:
    from edgeconv.core.hashing import sha256_file, sha256_json

    return sha256_json([(p.relative_to(root).as_posix(), sha256_file(p)) for p in sorted(files)])


def source_fingerprint(model: Any, weights: str | None, settings: dict[str, Any]) -> str | None:
    """The identity of a model source from file contents alone, or None when that is not knowable without
    running code (a ``package.module:factory``, an ``nn.Module`` object).

    A ``FILE.py:FACTORY`` is identified by every ``.py`` file under the factory file's folder (its local imports
    live there), so editing a helper module is a different model; a file-based model by its own bytes.
    """
    from edgeconv.core.hashing import sha256_file, sha256_json
    from edgeconv.pipeline import resolve_zoo

    if not isinstance(model, str):
        return None
    code: str | None
    zoo = resolve_zoo(model)
    if zoo is not None:
        import edgeconv

        pkg = Path(edgeconv.__file__).parent / "zoo"
        code = _tree_hash(list(pkg.glob("*.py")), pkg)
        weights = weights or zoo["weights"]
    else:
        target, sep, attr = model.rpartition(":")
        path = Path(target if sep and target.endswith(".py") else model).expanduser()
        if not path.is_file():
            return None
        if path.suffix == ".py":
            files = [p for p in path.resolve().parent.rglob("*.py") if "__pycache__" not in p.parts]
            if len(files) > _MAX_CODE_FILES:
                return None
            code = _tree_hash(files, path.resolve().parent) + f":{path.name}:{attr}"
        else:
            code = sha256_file(path)
    w = None
    if weights:
        wp = Path(weights).expanduser()
        if not wp.is_file():
            return None
        w = sha256_file(wp)
    return sha256_json({"model": model if zoo else None, "code": code, "weights": w, "settings": settings})


def data_fingerprint(root: str | Path | None) -> str | None:
    """Contents of a calibration or evaluation folder (every file, by path and hash)."""
    if root is None:
        return None
    p = Path(root).expanduser()
    if p.is_file():
        return _tree_hash([p], p.parent)
    if not p.is_dir():
        return None
    return _tree_hash([f for f in p.rglob("*") if f.is_file()], p)


def fast_keys(source_fp: str, rows: list[PlanRow], *, calib: str | Path | None, calib_size: int, calib_seed: int,
              preprocess: Preprocess | None, evaluation: dict[str, Any], zoo_calib: Path | None) -> dict[str, str]:
    """label -> a key of everything the row's artifact depends on, computable without torch or a backend."""
    from edgeconv import __version__
    from edgeconv.core.env import isa_features
    from edgeconv.core.hashing import code_fingerprint, sha256_json
    from edgeconv.core.lazy import version
    from edgeconv.pipeline import VERIFY_RULES

    calib_fp = data_fingerprint(calib or zoo_calib)
    evaluation = dict(evaluation)
    data = evaluation.get("data")
    if data is not None and not str(data).startswith("zoo"):
        evaluation["data_fp"] = data_fingerprint(data)  # the held-out data's content, not only its path
    task = evaluation.get("task")
    if task:  # files a task spec names (alphabet=@chars.txt, labels=plates.csv, masks=DIR)
        import re

        named = [t for t in re.split(r"[,:=@]", str(task)) if t and Path(t).exists()]
        evaluation["task_files"] = [data_fingerprint(t) for t in named]
    keys = {}
    for row in rows:
        backend = get_target(row.profile.backend)
        dists = dict.fromkeys((*FRONTEND_DISTS, *backend.modules, *backend.tools))
        keys[row.label] = sha256_json({
            "edgeconv": __version__, "code": code_fingerprint(), "verify_rules": VERIFY_RULES, "source": source_fp,
            "isa": isa_features(),
            "profile": row.profile.to_dict(), "tolerance": row.profile.tol(row.precision), "precision": row.precision,
            "keep_fp32": list(row.keep_fp32), "options": row.options,
            "calibration": [calib_fp, calib_size, calib_seed] if row.precision in backend.calibrated else None,
            "preprocess": preprocess.to_dict() if preprocess else None, "evaluation": evaluation,
            "versions": {d: version(d) for d in dists},
        })
    return keys


def fast_lookup(keys: dict[str, str]) -> dict[str, Path] | None:
    """label -> verified artifact cache entry for every row, or None if any row is not known."""
    found: dict[str, Path] = {}
    for label, k in keys.items():
        hit = cache.lookup("plans", k)
        if hit is None:
            return None
        try:
            art_key = (hit / "artifact_key").read_text().strip()
        except OSError:
            return None
        entry = cache.lookup("artifacts", art_key)
        if entry is None:
            return None
        found[label] = entry
    return found


def remember(key: str, artifact_key: str) -> None:
    """Record which artifact a fast key resolved to (a tiny cache entry of its own)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeconv-plan-") as d:
        (Path(d) / "artifact_key").write_text(artifact_key)
        cache.store("plans", key, Path(d))
