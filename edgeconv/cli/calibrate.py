"""``edgeconv calibrate``: compute (or reuse) activation statistics once and write them as JSON.

Why a separate command: statistics are the expensive, backend-independent half of INT8; computing them once and
inspecting them (ranges, input per-channel stats, skipped files, sample size) before converting to five backends
saves time and makes a bad calibration set visible early.  The same cache is then hit by ``edgeconv convert``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeconv.cli import _kv, handle_errors
from edgeconv.core.console import emit_json, stdout_to_stderr


def _write_trt_cache(ranges: dict[str, tuple[float, float]], path: Path) -> None:
    """A TensorRT calibration cache from the shared ranges, written by whichever registered target declares the
    ``trt_calibration_cache`` capability (the TensorRT target), so this command names no backend."""
    from edgeconv.core.errors import ConfigError
    from edgeconv.targets.registry import all_targets

    writers = [t for t in all_targets().values() if "trt_calibration_cache" in t.capabilities]
    if not writers:
        raise ConfigError("no installed target can write a TensorRT calibration cache",
                          hint="install edgeconv with its tensorrt target, or use the JSON statistics")
    writers[0].write_calibration_cache(ranges, path)  # type: ignore[attr-defined]


@click.command()
@click.option("--model", "-m", required=True, help="FILE.py:FACTORY, TorchScript/.pt2/.onnx file, or zoo:NAME.")
@click.option("--weights", "-w", help="state_dict checkpoint (.pt/.pth/.safetensors).")
@click.option("--model-arg", multiple=True, metavar="KEY=VALUE", help="Keyword argument for the factory (repeatable).")
@click.option("--input", "inputs", multiple=True, metavar="[NAME:]1x3xHxW[:dtype]",
              help="Model input (repeatable; without NAME the model's own input name).")
@click.option("--calib", type=click.Path(), help="Image folder, class folders, YOLO split, COCO JSON or .npy/.npz "
              "(default: the bundled model's calibration images).")
@click.option("--calib-size", default=512, show_default=True, help="Number of calibration samples (seeded).")
@click.option("--calib-seed", default=0, show_default=True)
@click.option("--method", "methods", multiple=True, type=click.Choice(["minmax", "entropy", "percentile"]),
              help="Statistics to compute (repeatable; default minmax).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Method parameter: percentile=99.99, num_bins=2048, num_quantized_bins=255.")
@click.option("--preprocess", help="Preprocessing contract (key=value list, or a .json/.toml file such as a profile "
              "with a [preprocess] table).")
@click.option("--eval", "eval_data", type=click.Path(exists=True), help="Evaluation set to check disjointness against.")
@click.option("--allow-overlap", is_flag=True, help="Accept calibration inputs that are also in --eval.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="JSON file for the statistics (several --method: OUT-METHOD.json each).")
@click.option("--trt-cache", type=click.Path(dir_okay=False), help="Also write a TensorRT calibration cache "
              "(an ncnn table needs the converted ncnn model: `edgeconv convert -t ncnn -p int8` writes it).")
@click.option("--no-cache", is_flag=True, help="Recompute even when cached statistics exist.")
@click.option("--json", "as_json", is_flag=True, help="Print one record per method (file, tensors, inputs, cache) on "
              "stdout.")
@handle_errors
def calibrate(model: str, weights: str | None, model_arg: tuple[str, ...], inputs: tuple[str, ...],
              calib: str | None, calib_size: int, calib_seed: int, methods: tuple[str, ...], params: tuple[str, ...],
              preprocess: str | None, eval_data: str | None, allow_overlap: bool, out: str, trt_cache: str | None,
              no_cache: bool, as_json: bool) -> None:
    """Compute activation statistics (cached) for INT8 and write them as JSON."""
    from edgeconv.calibration.dataset import check_disjoint
    from edgeconv.calibration.preprocess import Preprocess
    from edgeconv.calibration.stats import compute_stats
    from edgeconv.core.errors import ConfigError
    from edgeconv.pipeline import make_calibration, prepare

    pp = Preprocess.parse(preprocess) if preprocess else None
    prep = prepare(model, weights=weights, model_args=list(model_arg), inputs=list(inputs) or None,
                   use_cache=not no_cache, preprocess=pp)
    cal = make_calibration(prep, calib, size=calib_size, seed=calib_seed, preprocess=pp)
    if eval_data:
        check_disjoint(cal, Path(eval_data), allow_overlap=allow_overlap)
    method_params = _kv(params, "--param")
    methods = methods or ("minmax",)
    if len(methods) > 1 and trt_cache:
        raise ConfigError("--trt-cache takes one --method")
    written = []
    for method in methods:
        with stdout_to_stderr():  # tools that print must not mix into the results
            st = compute_stats(prep.reference.onnx_path, prep.reference.sha256, cal, method, method_params,
                               use_cache=not no_cache)
        dest = Path(out) if len(methods) == 1 else Path(out).with_name(f"{Path(out).stem}-{method}.json")
        dest.parent.mkdir(parents=True, exist_ok=True)
        doc = {**st.to_json(), "reference_sha256": prep.reference.sha256, "cache": st.cache,
               "calibration": cal.manifest() if cal.input_stats else st.calibration}
        dest.write_text(json.dumps(doc, indent=1))
        rec = {"method": method, "file": str(dest), "tensors": len(st.ranges),
               "inputs": doc["calibration"].get("used", len(cal)), "skipped": doc["calibration"].get("skipped", 0),
               "cache": st.cache, "trt_cache": None}
        if trt_cache:
            _write_trt_cache(st.ranges, Path(trt_cache))
            rec["trt_cache"] = trt_cache
        written.append(rec)
        if not as_json:
            click.echo(f"{method:<10} {rec['tensors']} tensors, {rec['inputs']} inputs (skipped {rec['skipped']}), "
                       f"cache {st.cache} → {dest}")
            if trt_cache:
                click.echo(f"{'':<10} TensorRT calibration cache → {trt_cache}")
    if as_json:
        emit_json(written)


COMMANDS = [calibrate]
