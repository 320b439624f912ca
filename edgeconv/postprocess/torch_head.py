"""The in-graph decode as a torch wrapper, for backends that convert from the PyTorch module (TFLite via litert-torch).

Why a second implementation beside ``graph.py``: torch-route converters never see the ONNX, so the decode has to be
in the module they trace.  It computes exactly what ``make_end2end_onnx(..., nms="none")`` computes (a test holds
them equal): the CenterNet contract, or the YOLO top-M candidates whose NMS runs beside the graph.  There is no
NMS here because torch has no exportable NMS op without torchvision (and litert-torch cannot lower a data-dependent
loop), so ``with_nms=True`` on a YOLO head is refused with a ConfigError rather than approximated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeconv.core.errors import ConfigError
from edgeconv.postprocess.spec import PostprocessSpec, as_spec


def _consts(spec: PostprocessSpec) -> dict[str, np.ndarray]:
    """Grid/anchor/stride constants per head, from the recorded output shapes (as graph.py builds them)."""
    dec = spec.decode
    if not dec.output_shapes:
        raise ConfigError("post-processing: the torch wrapper needs output_shapes in the decode parameters",
                          hint="derive them with spec_for(prepared) or decode_params_from_module(outputs=...)",
                          stage="postprocess")
    c: dict[str, np.ndarray] = {}
    if dec.head == "yolov5":
        na = dec.num_anchors
        grid, scale, anc = [], [], []
        for lvl, shp in enumerate(dec.output_shapes):
            h, w = shp[2], shp[3]
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            s = float(dec.strides[lvl])
            grid.append(np.tile((np.stack([gx.ravel(), gy.ravel()], -1) - 0.5) * s, (na, 1)))
            scale.append(np.full((na * h * w, 1), 2.0 * s, np.float32))
            anc.append(np.repeat(np.asarray(dec.anchors[lvl], np.float32) * 4.0, h * w, axis=0))
        c.update(gridoff=np.concatenate(grid)[None], scale2=np.concatenate(scale)[None], anc4=np.concatenate(anc)[None])
    elif dec.head == "yolov8":
        anchor, stride = [], []
        for lvl, shp in enumerate(dec.output_shapes):
            h, w = shp[2], shp[3]
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            anchor.append(np.stack([gx.ravel() + 0.5, gy.ravel() + 0.5], 0))
            stride.append(np.full((1, h * w), float(dec.strides[lvl]), np.float32))
        c.update(anchor=np.concatenate(anchor, 1)[None], stride=np.concatenate(stride, 1)[None],
                 proj=np.arange(dec.reg_max, dtype=np.float32).reshape(1, 1, -1, 1))
    elif dec.head == "ssd":
        from edgeconv.postprocess.standalone import ssd_constants

        ctr, scale, size = ssd_constants(spec.to_dict()["decode"])
        c.update(ssd_ctr=ctr, ssd_scale=scale, ssd_size=size)
    return c


def end2end_module(module: Any, params: PostprocessSpec | Any, with_nms: bool = False,
                   output_names: Sequence[str] | None = None) -> Any:
    """Wrap ``module`` so its forward returns ``(detections, count)`` (CenterNet) or ``(candidates, count)`` (YOLO).

    ``output_names``: the names of ``module``'s outputs in the order it returns them (default: the decode's
    ``outputs``, which is the bundled models' order).
    """
    import torch
    from torch import nn

    spec = as_spec(params)
    dec = spec.decode
    if with_nms and dec.head != "centernet":
        raise ConfigError("post-processing: the torch wrapper has no NMS (no exportable NMS op in torch)",
                          hint="use make_end2end_onnx(nms='onnx') for ONNX backends, or with_nms=False plus the "
                               "post-processor files (write_postprocessor) for NMS beside the graph",
                          stage="postprocess")
    names = list(output_names or dec.outputs)
    missing = [n for n in dec.outputs if n not in names]
    if missing:
        raise ConfigError(f"post-processing: module outputs {names} lack {missing}", hint="pass output_names=",
                          stage="postprocess")
    consts = _consts(spec)

    class End2End(nn.Module):
        """``module`` + decode (+ CenterNet peaks / YOLO top-M), contract layout, float32."""

        def __init__(self) -> None:
            super().__init__()
            self.net = module
            for k, v in consts.items():
                self.register_buffer(k, torch.from_numpy(v), persistent=False)

        def _raw(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.net(x)
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            by = dict(zip(names, out))
            return [by[n] for n in dec.outputs]

        def _yolo(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            nc = dec.num_classes
            if dec.head == "yolov5":
                na, no = dec.num_anchors, 5 + nc
                flat = [m.reshape(m.shape[0], na, no, -1).transpose(2, 3).reshape(m.shape[0], -1, no) for m in maps]
                s = torch.sigmoid(torch.cat(flat, 1))
                xy = s[..., 0:2] * self.scale2 + self.gridoff
                wh = s[..., 2:4] * s[..., 2:4] * self.anc4
                boxes = torch.cat([xy - wh * 0.5, xy + wh * 0.5], 2)
                return boxes, (s[..., 5:] * s[..., 4:5]).transpose(1, 2)
            if dec.head == "yolov8":
                r = dec.reg_max
                x = torch.cat([m.reshape(m.shape[0], m.shape[1], -1) for m in maps], 2)
                box = x[:, : 4 * r]
                if r > 1:
                    box = (torch.softmax(box.reshape(x.shape[0], 4, r, -1), 2) * self.proj).sum(2)
                x1y1 = (self.anchor - box[:, 0:2]) * self.stride
                x2y2 = (self.anchor + box[:, 2:4]) * self.stride
                return torch.cat([x1y1, x2y2], 1).transpose(1, 2), torch.sigmoid(x[:, 4 * r:])
            if dec.head == "ssd":
                loc, conf = maps
                xy = self.ssd_ctr + loc[..., 0:2] * self.ssd_scale
                wh = self.ssd_size * torch.exp(loc[..., 2:4] * dec.variances[1])
                probs = torch.softmax(conf, 2) if dec.conf_softmax else conf
                cls = probs[..., 1:] if dec.background else probs
                return torch.cat([xy - wh * 0.5, xy + wh * 0.5], 2), cls.transpose(1, 2)
            x = maps[0]
            if dec.channels_first:
                x = x.transpose(1, 2)
            xy, wh = x[..., 0:2], x[..., 2:4]
            boxes = torch.cat([xy - wh * 0.5, xy + wh * 0.5], 2)
            cls = x[..., 5:5 + nc] * x[..., 4:5] if dec.objectness else x[..., 4:4 + nc]
            return boxes, cls.transpose(1, 2)

        def _rows(self, boxes: torch.Tensor, vals: torch.Tensor, cls: torch.Tensor,
                  valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rows = torch.cat([boxes, vals.unsqueeze(2), cls.to(torch.float32).unsqueeze(2)], 2)
            return rows * valid.unsqueeze(2), valid.sum(1).to(torch.int32)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            maps = self._raw(x)
            if dec.head == "centernet":
                hm, wh, off = maps
                if not dec.heatmap_sigmoid:
                    hm = torch.sigmoid(hm)
                n, c, h, w = hm.shape
                peaks = torch.where(torch.nn.functional.max_pool2d(hm, 3, 1, 1) == hm, hm, torch.zeros_like(hm))
                k = min(spec.max_det, c * h * w)
                vals, idx = torch.topk(peaks.reshape(n, -1), k, dim=1)
                cls, pix = idx // (h * w), idx % (h * w)
                ys, xs = (pix // w).to(torch.float32), (pix % w).to(torch.float32)
                g = pix.unsqueeze(1).expand(n, 2, k)
                o = torch.gather(off.reshape(n, 2, -1), 2, g)
                s = torch.gather(wh.reshape(n, 2, -1), 2, g) * (0.5 * dec.strides[0])
                cx, cy = (xs + o[:, 0]) * dec.strides[0], (ys + o[:, 1]) * dec.strides[0]
                boxes = torch.stack([cx - s[:, 0], cy - s[:, 1], cx + s[:, 0], cy + s[:, 1]], 2)
                dets, count = self._rows(boxes, vals, cls, (vals > spec.score_threshold).to(torch.float32))
                if k < spec.max_det:
                    dets = torch.nn.functional.pad(dets, (0, 0, 0, spec.max_det - k))
                return dets, count
            boxes, scores = self._yolo(maps)
            n, c, a = scores.shape
            if spec.class_agnostic:
                flat, best = scores.max(1)
            else:
                flat, best = scores.reshape(n, c * a), None
            vals, idx = torch.topk(flat, min(spec.max_candidates, flat.shape[1]), dim=1)
            if best is None:
                cls, anchor = idx // a, idx % a
            else:
                cls, anchor = torch.gather(best, 1, idx), idx
            rows = torch.gather(boxes, 1, anchor.unsqueeze(2).expand(n, anchor.shape[1], 4))
            return self._rows(rows, vals, cls, (vals > spec.score_threshold).to(torch.float32))

    return End2End().eval()
