"""What an OpenVINO artifact needs to run as verified: its compile configuration, a deploy snippet, and what ran.

Why a file beside the IR: OpenVINO's CPU plugin picks ``INFERENCE_PRECISION_HINT`` per machine — bf16 on CPUs with
AVX-512-BF16 or AMX — so a plain ``core.compile_model("model.xml", "CPU")`` of an "fp32" IR computes in bf16 there
(measured on ResNet-20: top-1 flips on 0.45 % of images, max abs 0.38). ``runtime_options`` in the IR's rt_info is
written too, but openvino 2026.4.1's CPU plugin does not apply it (checked at conversion: the default load's
precision is recorded in the manifest). So the artifact ships ``compile_config.json`` and ``deploy_openvino.py``,
which compiles with it; edgeconv's own runner reads the same file, so what is verified is what is shipped.

``runtime_summary`` reads the compiled model's runtime graph (``get_runtime_model()`` rt_info: ``runtimePrecision``
and oneDNN ``primitiveType`` per executed layer) — the precision that actually ran, and for INT8 whether integer
kernels ran and on which ISA (VNNI / AMX).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.env import isa_features

CONFIG_FILE = "compile_config.json"
SNIPPET_FILE = "deploy_openvino.py"
#: artifact precision -> INFERENCE_PRECISION_HINT pinned on the CPU (fp16: f16 only where the CPU computes in f16)
PINNED = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
COMPUTE_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul", "GroupConvolution")
_HINT_NAMES = {"float32": "f32", "f32": "f32", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "f16": "f16"}

SNIPPET = '''"""Run this OpenVINO artifact the way edgeconv verified it.

A plain core.compile_model("model.xml", "CPU") lets the CPU plugin choose the inference precision: on CPUs with
AVX-512-BF16 or AMX it computes in bf16 even for an fp32 IR. compile_config.json pins what the manifest says.
"""

import json
from pathlib import Path

import numpy as np
import openvino as ov

HERE = Path(__file__).resolve().parent


def load(device: str | None = None) -> ov.CompiledModel:
    cfg = json.loads((HERE / "compile_config.json").read_text())
    props = dict(cfg["properties"]) if (device or cfg["device"]).upper().startswith("CPU") else {}
    return ov.Core().compile_model(str(HERE / "model.xml"), device or cfg["device"], props)


if __name__ == "__main__":
    compiled = load()
    feeds = {p.get_any_name(): np.zeros(list(p.get_shape()), np.float32) for p in compiled.inputs}
    out = compiled(feeds)
    print(compiled.get_property("INFERENCE_PRECISION_HINT"), {k.get_any_name(): v.shape for k, v in out.items()})
'''


def hint_name(value: Any) -> str:
    """``<Type: 'bfloat16'>`` / ``"bf16"`` -> ``bf16`` (what a compiled model reports vs what a config takes)."""
    s = str(getattr(value, "get_type_name", lambda: value)()) if not isinstance(value, str) else value
    s = s.replace("<Type: '", "").replace("'>", "").strip().lower()
    return _HINT_NAMES.get(s, s)


def cpu_capabilities(core: Any, device: str = "CPU") -> tuple[str, ...]:
    try:
        return tuple(core.get_property(device.split(":")[0].split(".")[0], "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - virtual devices (AUTO, HETERO) have no capabilities
        return ()


def bf16_unavailable(core: Any | None = None, device: str = "CPU") -> str | None:
    """Why bf16 cannot run here (None when it can): the plugin's own BF16 capability, else the CPU's flags."""
    if not device.upper().startswith("CPU"):
        return f"bf16 is a CPU precision; device {device} is not the CPU"
    caps: tuple[str, ...] = ()
    if core is not None:
        caps = cpu_capabilities(core, device)
    if "BF16" in caps or (not caps and isa_features().get("BF16")):
        return None
    from edgeconv.core.env import isa_line

    return f"this CPU has no native bf16 (AVX-512-BF16 or AMX-BF16); it has {isa_line()}"


def pinned_precision(core: Any, device: str, precision: str, override: str | None = None) -> str:
    """The INFERENCE_PRECISION_HINT an artifact of ``precision`` is compiled with on ``device``."""
    if override:
        return hint_name(override)
    hint = PINNED.get(precision, "f32")
    if hint == "f16" and "FP16" not in cpu_capabilities(core, device):
        return "f32"  # x86 CPUs without AVX512-FP16/AMX-FP16: f32 compute on fp16-stored weights
    return hint


def compile_config(core: Any, device: str, precision: str, *, performance_hint: str = "LATENCY",
                   streams: int | str | None = None, override: str | None = None) -> dict[str, Any]:
    """The properties an artifact is compiled with (``compile_config.json``): precision pinned on the CPU."""
    props: dict[str, Any] = {"PERFORMANCE_HINT": str(performance_hint).upper()}
    if device.upper().startswith("CPU"):
        props["INFERENCE_PRECISION_HINT"] = pinned_precision(core, device, precision, override)
    if streams not in (None, "", 0):
        props["NUM_STREAMS"] = str(streams)
    return {"device": device, "precision": precision, "properties": props}


def write_deploy(out_dir: Path, config: dict[str, Any]) -> list[str]:
    """Write ``compile_config.json`` and ``deploy_openvino.py``; returns their names (artifact files)."""
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / SNIPPET_FILE).write_text(SNIPPET)
    return [CONFIG_FILE, SNIPPET_FILE]


def read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def runtime_summary(compiled: Any) -> dict[str, Any]:
    """What the compiled model executes: precision of every compute layer, oneDNN kernels, and for integer layers
    whether the VNNI (or AMX) path ran.

    oneDNN's int8 brgemm kernels are named ``brgconv_avx512_I8`` whether or not they use ``vpdpbusd``; it
    dispatches to AVX512-VNNI / AVX-VNNI whenever the CPU has them, so VNNI counts as used when integer compute
    layers ran and the CPU has VNNI, or a kernel name says so.
    """
    precisions: Counter[str] = Counter()
    kernels: Counter[str] = Counter()
    int8_layers = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        ri = op.get_rt_info()
        info = {k: ri[k].astype(str) for k in ri}
        if info.get("layerType") not in COMPUTE_LAYERS:
            continue
        prec = info.get("runtimePrecision", "?")
        precisions[prec] += 1
        kernels[info.get("primitiveType", "?")] += 1
        int8_layers += prec in ("u8", "i8")
    names = " ".join(kernels).lower()
    isa = isa_features()
    amx = "amx" in names
    vnni = int8_layers > 0 and (amx or "vnni" in names or bool(isa.get("VNNI")))
    try:
        hint = hint_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:  # noqa: BLE001 - not every device reports it
        hint = None
    return {"inference_precision": hint, "compute_layers": dict(precisions), "kernels": dict(kernels),
            "int8_layers": int8_layers, "vnni": vnni, "amx": amx,
            "bf16_layers": precisions.get("bf16", 0)}


def named(compiled: Any, result: Any, names: list[str]) -> dict[str, np.ndarray]:
    """A compiled model's result keyed by the reference output names (tensor names, else position)."""
    out: dict[str, np.ndarray] = {}
    for i, port in enumerate(compiled.outputs):
        pn = port.get_names()
        name = next((n for n in names if n in pn), names[i] if i < len(names) else port.get_any_name())
        out[name] = np.array(result[port], copy=True)
    return out
