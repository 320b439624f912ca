"""Long fuzz run over every parser that reads user text (the CI test runs 60 derandomised examples each).

Same targets and strategies as ``tests/hostile/test_fuzz.py``; here each gets ``--examples`` random examples and
every distinct failure (an exception that is not the parser's EdgeconvError kind) is collected with one input
that triggers it, instead of stopping at the first. Results go to ``benchmarks/results/fuzz_parsers_<date>.json``
with the machine named.

    python benchmarks/fuzz_parsers.py --examples 5000            # every target
    python benchmarks/fuzz_parsers.py --examples 20000 profile   # one target
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _targets() -> Any:
    spec = importlib.util.spec_from_file_location("edgeconv_fuzz_targets", ROOT / "tests" / "hostile" / "test_fuzz.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_target(mod: Any, name: str, examples: int) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings

    outcomes: collections.Counter[str] = collections.Counter()
    failures: dict[str, dict[str, Any]] = {}

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(value=mod.TARGETS[name][0])
    def run(value: Any) -> None:
        try:
            outcomes[mod.check(name, value)] += 1
        except BaseException as e:  # noqa: BLE001 - every non-EdgeconvError answer is what we are looking for
            if isinstance(e, KeyboardInterrupt):
                raise
            key = f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
            outcomes["failed"] += 1
            rec = failures.setdefault(key, {"count": 0, "example": repr(value)[:300]})
            rec["count"] += 1

    t0 = time.perf_counter()
    try:
        run()
    except BaseException as e:  # noqa: BLE001 - a skip (missing parser) or a hypothesis-level problem
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"examples": 0, "note": f"{type(e).__name__}: {e}"}
    return {"examples": sum(outcomes.values()), "outcomes": dict(outcomes),
            "seconds": round(time.perf_counter() - t0, 1), "failures": failures}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="target names (default: all)")
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    mod = _targets()
    names = args.targets or list(mod.TARGETS)
    results = {}
    for name in names:
        results[name] = run_target(mod, name, args.examples)
        r = results[name]
        print(f"{name:18} {r.get('examples', 0):6d} examples  {r.get('outcomes', {})}  "
              f"{len(r.get('failures', {}))} distinct failure(s) {r.get('note', '')}", flush=True)
        for key, rec in (r.get("failures") or {}).items():
            print(f"    {rec['count']:5d}x {key}\n           e.g. {rec['example']}")
    from edgeconv.core.env import cpu_info

    record = {"benchmark": "fuzz_parsers", "date": dt.date.today().isoformat(),
              "machine": {"cpu": cpu_info().get("model") or platform.processor(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "examples_per_target": args.examples, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"fuzz_parsers_{record['date']}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 1 if any(r.get("failures") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
