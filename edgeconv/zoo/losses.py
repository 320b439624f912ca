"""Training losses for the bundled demo models (training-only; imports torch at module level).

Kept separate from the model files so that the models stay importable/exportable without any
training machinery, and so the decode conventions used here visibly mirror the numpy decoders in
``edgeconv.bench.detection`` (anchors/strides come from ``edgeconv.zoo.yolo``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgeconv.zoo import yolo as yolo_mod


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete-IoU between matching rows of two ``(n, 4)`` xywh tensors."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    chh = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + chh**2 + eps
    rho2 = ((x2 - x1) ** 2 + (y2 - y1) ** 2)
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


class YoloLoss:
    """YOLOv5 loss: CIoU box, BCE objectness (IoU-valued targets), BCE classes.

    Anchor matching is by width/height ratio (< ``anchor_t``) and each target is also assigned to
    the two nearest neighbouring cells, exactly as YOLOv5, which is what makes the
    ``xy = sigmoid*2 - 0.5`` parameterisation work.
    """

    def __init__(
        self,
        num_classes: int,
        box: float = 0.05,
        obj: float = 0.16,
        cls: float = 0.1,
        anchor_t: float = 4.0,
        balance: tuple[float, ...] = (4.0, 1.0, 0.4),
    ) -> None:
        self.nc = num_classes
        self.hyp = {"box": box, "obj": obj, "cls": cls}
        self.anchor_t = anchor_t
        self.balance = balance
        self.strides = yolo_mod.STRIDES
        # Anchors in grid units per level: (nl, na, 2).
        self.anchors = torch.tensor(yolo_mod.ANCHORS, dtype=torch.float32) / torch.tensor(
            self.strides, dtype=torch.float32
        ).view(-1, 1, 1)
        self.na = self.anchors.shape[1]

    def __call__(self, preds: tuple[torch.Tensor, ...], targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``targets``: (nt, 6) rows of ``image_index, class, cx, cy, w, h`` normalised to [0, 1]."""
        lcls = torch.zeros(())
        lbox = torch.zeros(())
        lobj = torch.zeros(())
        bs = preds[0].shape[0]
        ps = [p.view(bs, self.na, self.nc + 5, p.shape[2], p.shape[3]).permute(0, 1, 3, 4, 2) for p in preds]
        tcls, tbox, indices, anch = self._build_targets(ps, targets)
        for i, pi in enumerate(ps):
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4])
            n = b.shape[0]
            if n:
                ps_i = pi[b, a, gj, gi]
                pxy = ps_i[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps_i[:, 2:4].sigmoid() * 2) ** 2 * anch[i]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i])
                lbox = lbox + (1.0 - iou).mean()
                iou_d = iou.detach().clamp(0)
                order = iou_d.argsort()  # highest IoU written last wins on duplicate cells
                tobj[b[order], a[order], gj[order], gi[order]] = iou_d[order]
                t = torch.zeros_like(ps_i[:, 5:])
                t[torch.arange(n), tcls[i]] = 1.0
                lcls = lcls + F.binary_cross_entropy_with_logits(ps_i[:, 5:], t)
            lobj = lobj + F.binary_cross_entropy_with_logits(pi[..., 4], tobj) * self.balance[i]
        lbox, lobj, lcls = lbox * self.hyp["box"], lobj * self.hyp["obj"], lcls * self.hyp["cls"]
        total = (lbox + lobj + lcls) * bs
        return total, {"box": float(lbox.detach()), "obj": float(lobj.detach()), "cls": float(lcls.detach())}

    def _build_targets(self, ps: list[torch.Tensor], targets: torch.Tensor):
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch = [], [], [], []
        gain = torch.ones(7)
        ai = torch.arange(na, dtype=torch.float32).view(na, 1).repeat(1, nt)
        targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = 0.5
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * g
        for i, pi in enumerate(ps):
            anchors = self.anchors[i]
            h, w = pi.shape[2], pi.shape[3]
            gain[2:6] = torch.tensor([w, h, w, h], dtype=torch.float32)
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]
                j = torch.max(r, 1 / r).max(2)[0] < self.anchor_t
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                lo, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, lo, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = torch.zeros((0, 2))
            b, c = t[:, 0].long(), t[:, 1].long()
            gxy, gwh, a = t[:, 2:4], t[:, 4:6], t[:, 6].long()
            gij = (gxy - offsets).long()
            gi = gij[:, 0].clamp(0, w - 1)
            gj = gij[:, 1].clamp(0, h - 1)
            indices.append((b, a, gj, gi))
            tbox.append(torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
        return tcls, tbox, indices, anch


def focal_heatmap_loss(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """CornerNet/CenterNet penalty-reduced focal loss on a sigmoid heatmap (alpha=2, beta=4)."""
    pred = pred.clamp(eps, 1 - eps)
    pos = gt.eq(1).float()
    neg = 1 - pos
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred**2 * (1 - gt) ** 4 * neg
    num_pos = pos.sum()
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos.clamp(min=1)
