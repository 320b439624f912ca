"""OpenVINO runner: an ``ov.Core`` compiled model on the profile's device, addressed by reference tensor names.

The compile properties come from the artifact's ``compile_config.json`` (see ``deploy.py``) — the same file a user's
deployment loads — so what is verified is what is shipped: ``INFERENCE_PRECISION_HINT`` pinned (f32 for fp32/int8,
bf16 for bf16, f16 for fp16 where the CPU computes in f16, else f32) because the CPU plugin's default is bf16 on CPUs
with AVX-512-BF16/AMX and an "fp32" artifact would otherwise drift far beyond 1e-4. ``PERFORMANCE_HINT``,
``NUM_STREAMS`` (options ``performance_hint``/``streams``) and ``INFERENCE_NUM_THREADS`` (profile threads) are
OpenVINO properties too. Artifacts without the file (older ones) get the same pinning computed here.
``infer_async`` keeps requests in flight with an ``AsyncInferQueue``.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np

from edgeconv.core.lazy import require
from edgeconv.targets.base import Runner
from edgeconv.targets.openvino import deploy
from edgeconv.targets.openvino import preprocess as pp

HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")


def inference_precision(core: Any, device: str, precision: str, override: str | None = None) -> str:
    """The INFERENCE_PRECISION_HINT to request (see the module docstring for why it is pinned)."""
    return deploy.pinned_precision(core, device, precision, override)


def owned(feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """C-contiguous copies the runner owns: requests (async ones above all) must never read a caller's buffer that
    may be strided, Fortran-order, read-only or reused before the request completes."""
    return {n: np.array(feeds[n], order="C", copy=True) for n in names}


class OpenVinoRunner(Runner):
    def __init__(self, xml: Path | str, *, device: str = "CPU", threads: int | None = None,
                 performance_hint: str = "LATENCY", streams: int | str | None = None, precision: str = "fp32",
                 inference_precision_hint: str | None = None, output_names: list[str] | None = None,
                 embedded: dict[str, Any] | None = None, compile_config: dict[str, Any] | None = None,
                 **_: Any) -> None:
        ov = require("openvino", "openvino", target="openvino")
        self.ov, self.core, self.device = ov, ov.Core(), device
        self.model = self.core.read_model(str(xml))
        hint = str(performance_hint).upper()
        if hint not in HINTS:
            from edgeconv.core.errors import ConfigError

            raise ConfigError(f"unknown performance_hint '{performance_hint}'", hint=f"one of {', '.join(HINTS)}")
        shipped = dict((compile_config or {}).get("properties") or {})
        if compile_config and compile_config.get("device") != device:
            shipped.pop("INFERENCE_PRECISION_HINT", None)  # pinned for another device: decide for this one
        self.config: dict[str, Any] = {**shipped, "PERFORMANCE_HINT": hint}
        if device.upper().startswith("CPU"):
            if inference_precision_hint or "INFERENCE_PRECISION_HINT" not in self.config:
                self.config["INFERENCE_PRECISION_HINT"] = inference_precision(self.core, device, precision,
                                                                              inference_precision_hint)
            if threads:
                self.config["INFERENCE_NUM_THREADS"] = int(threads)
        else:
            self.config.pop("INFERENCE_PRECISION_HINT", None)
        if streams not in (None, "", 0):
            self.config["NUM_STREAMS"] = str(streams)
        self.compiled = self.core.compile_model(self.model, device, self.config)
        self.request = self.compiled.create_infer_request()
        self.embedded = embedded
        self._relaxed: Any = None
        names = list(output_names or [])
        self.output_ports = []
        for i, port in enumerate(self.compiled.outputs):
            pn = port.get_names()
            self.output_ports.append((next((n for n in names if n in pn),
                                           names[i] if i < len(names) else port.get_any_name()), i))
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.last_route = "model"
        self._queue: Any = None  # the last AsyncInferQueue, kept alive past its callbacks (infer_async)

    # -- inputs ------------------------------------------------------------------------------------------------
    def _relaxed_model(self) -> Any:
        """The same IR with its u8 input relaxed to f32: runs the embedded arithmetic on non-integral pixels."""
        if self._relaxed is None:
            m = self.model.clone()
            for p in m.get_parameters():
                p.set_element_type(self.ov.Type.f32)
            m.validate_nodes_and_infer_types()
            self._relaxed = self.core.compile_model(m, self.device, self.config).create_infer_request()
        return self._relaxed

    def _prepare(self, feeds: dict[str, np.ndarray]) -> tuple[Any, dict[str, np.ndarray]]:
        if not self.embedded:
            self.last_route = "model"
            # Not copied here: a synchronous infer() (share_inputs=False, its default) copies every input into the
            # request's own tensors, whatever its order, strides, dtype or write flag (tests/targets/test_runners.py).
            return self.request, {i: feeds[n] for i, n in enumerate(self.input_names)}
        name = self.embedded["input"]
        raw = pp.to_raw(np.asarray(feeds[name]), self.embedded)
        u8 = pp.as_u8(raw)
        if u8 is not None:
            self.last_route = "u8"
            return self.request, {self.input_names[0]: u8}
        self.last_route = "relaxed-f32"
        return self._relaxed_model(), {self.input_names[0]: raw.astype(np.float32)}

    def _outputs(self, request: Any) -> dict[str, np.ndarray]:
        return {name: np.array(request.get_output_tensor(i).data, copy=True) for name, i in self.output_ports}

    # -- API ---------------------------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request, inputs = self._prepare(feeds)
        values = request.infer(inputs).to_tuple()  # share_outputs=False: arrays of their own, in port order
        return {name: values[i] for name, i in self.output_ports}

    def compute(self, precision: str) -> dict[str, Any] | None:
        """From the compiled model's execution graph: the precision its compute layers run in and, with integer
        layers, whether oneDNN's VNNI (or AMX) path ran (``deploy.runtime_summary``)."""
        try:
            rt = deploy.runtime_summary(self.compiled)
        except Exception:  # noqa: BLE001 - a device plugin without an execution graph says nothing
            return None
        layers = rt.get("compute_layers") or {}
        out: dict[str, Any] = {"precision": rt.get("inference_precision"), "compute_layers": layers,
                               "source": "OpenVINO's execution graph"}
        if rt.get("int8_layers"):
            kernels = ", ".join(f"{k} x{n}" for k, n in sorted((rt.get("kernels") or {}).items()))
            path = "AMX" if rt.get("amx") else ("VNNI" if rt.get("vnni") else "no VNNI")
            out.update(int8_path=path, detail=f"{rt['int8_layers']} integer layers on oneDNN {kernels}")
        elif precision == "int8":
            out.update(int8_path="none", detail="no layer runs in an integer precision")
        return out

    def infer_raw(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Deployed path of an embedded-preprocess IR: raw u8 NHWC images in, reference-named outputs out."""
        self.request.infer({self.input_names[0]: np.array(images, order="C", copy=True)})
        return self._outputs(self.request)

    def infer_async(self, batch: list[dict[str, np.ndarray]], streams: int) -> list[dict[str, np.ndarray]]:
        """Throughput mode: ``streams`` requests in flight (0: the plugin's optimal number for the compiled model)."""
        ov = self.ov
        jobs = int(streams) or self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        queue = ov.AsyncInferQueue(self.compiled, jobs)
        results: list[dict[str, np.ndarray] | None] = [None] * len(batch)

        def done(request: Any, index: int) -> None:
            results[index] = self._outputs(request)

        queue.set_callback(done)
        # The callback runs on the plugin's own threads. Python's cyclic collector runs in whichever thread happens
        # to allocate: there it could finalize an unrelated, unreachable OpenVINO object whose executor owns that very
        # thread, which then joins itself (std::system_error "Resource deadlock avoided", abort). No collection while
        # requests are in flight; reference counting still frees what it frees, in the thread that drops it.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for i, feeds in enumerate(batch):
                if self.embedded:
                    request, inputs = self._prepare(feeds)
                    if request is not self.request:  # relaxed inputs: not the compiled model the queue runs
                        request.infer(inputs)
                        results[i] = self._outputs(request)
                        continue
                else:
                    inputs = owned(feeds, self.input_names)
                queue.start_async(inputs, userdata=i)
            queue.wait_all()
        finally:
            if was_enabled:
                gc.enable()
        # wait_all() returns once every request is done, which can be before the plugin thread that ran the last
        # callback has dropped its handle on the request: were the queue freed now, that handle would be the last
        # one, and the request's executor would be destroyed on its own thread (the same abort). The queue is
        # kept until the next call or close(), long after those threads let go.
        self._queue = queue
        return [r for r in results if r is not None]

    def close(self) -> None:
        self._queue = None
        self.request = self.compiled = self._relaxed = None  # type: ignore[assignment]


def runner_for_artifact(artifact: Any, *, threads: int | None = None, **kw: Any) -> OpenVinoRunner:
    """A runner configured from the artifact's manifest (profile device/options, embedded preprocessing)."""
    m = artifact.manifest
    prof = m.get("profile", {})
    opts = {**prof.get("options", {}), **(m.get("options") or {})}
    conv = m.get("conversion") or {}
    args: dict[str, Any] = {
        "device": prof.get("device", "CPU"), "threads": threads or prof.get("threads") or None,
        "performance_hint": opts.get("performance_hint", "LATENCY"), "streams": opts.get("streams"),
        "precision": m.get("precision", "fp32"), "inference_precision_hint": opts.get("inference_precision"),
        "output_names": [o["name"] for o in m.get("outputs", [])], "embedded": conv.get("embedded_preprocess"),
        "compile_config": _shipped_config(artifact),
    }
    args.update(kw)
    return OpenVinoRunner(artifact.file("model"), **args)


def _shipped_config(artifact: Any) -> dict[str, Any] | None:
    """The artifact's ``compile_config.json`` (None for artifacts made before it was shipped)."""
    if "compile_config" not in (artifact.manifest.get("roles") or {}):
        return None
    return deploy.read_config(artifact.file("compile_config"))
