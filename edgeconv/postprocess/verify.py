"""Judging contract outputs: detections matched by IoU against a reference, and mAP on the contract itself.

Why not tensor tolerances: after TopK/NMS a tiny numeric drift reorders rows or swaps a borderline box, so a
max-abs check on ``detections`` fails conversions that are fine and says nothing useful.  Matching boxes (same
class, IoU >= a threshold, greedy in reference score order) measures what an application sees: how many reference
detections survive, how far boxes moved and how much scores drifted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # bench sits above this package; it is imported inside the functions that need it
    from edgeconv.bench.detection import Detections

DetsLike = Any  # (dets, count) arrays, a {"detections", "count"} dict, or a list of Detections


def to_detections(dets: np.ndarray, count: np.ndarray) -> list[Detections]:
    """Contract arrays -> one ``edgeconv.bench.detection.Detections`` per image (what the metrics take)."""
    from edgeconv.bench.detection import Detections

    dets = np.asarray(dets, np.float32)
    count = np.asarray(count).reshape(-1)
    return [Detections(dets[i, : int(count[i]), :4], dets[i, : int(count[i]), 4], dets[i, : int(count[i]), 5])
            for i in range(dets.shape[0])]


def _as_list(x: DetsLike) -> list[Detections]:
    if isinstance(x, Mapping):
        return to_detections(x["detections"], x["count"])
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray):
        return to_detections(*x)
    return list(x)  # type: ignore[arg-type]


def to_image_coords(det: Detections, meta: Mapping[str, float] | None) -> Detections:
    """Model-input pixels -> original-image pixels (the benchmark's own conversion: one meaning of the meta)."""
    from edgeconv.bench.metrics import to_image_coords as convert

    return convert(det, meta or {})


def compare_detections(ref_dets: DetsLike, got_dets: DetsLike, *, iou: float = 0.5, min_score: float = 0.0,
                       min_matched: float = 0.99) -> dict[str, Any]:
    """Match ``got`` to ``ref`` per image (same class, IoU >= ``iou``, greedy by reference score).

    Only detections with score >= ``min_score`` take part (low-score tails churn under any numeric change).
    ``matched_fraction``: of the reference detections, the share matched; ``extra_fraction``: of got, the share
    unmatched; ``iou_mean/min`` over matches; ``score_drift_max/mean``: |score difference| over matches.
    ``pass``: matched and extra fractions within ``min_matched``.
    """
    from edgeconv.bench.detection import box_iou

    refs, gots = _as_list(ref_dets), _as_list(got_dets)
    if len(refs) != len(gots):
        raise ValueError(f"{len(refs)} reference images but {len(gots)} compared images")
    n_ref = n_got = n_match = 0
    ious: list[float] = []
    drifts: list[float] = []
    worst_image, worst_frac = -1, 1.0
    for i, (r, g) in enumerate(zip(refs, gots)):
        r, g = r.filter(min_score), g.filter(min_score)
        n_ref += len(r)
        n_got += len(g)
        m = 0
        if len(r) and len(g):
            m_iou = box_iou(r.boxes, g.boxes)
            m_iou[r.classes[:, None] != g.classes[None, :]] = -1.0
            used = np.zeros(len(g), bool)
            for ri in np.argsort(-r.scores, kind="stable"):
                row = np.where(used, -1.0, m_iou[ri])
                gi = int(row.argmax())
                if row[gi] >= iou:
                    used[gi] = True
                    m += 1
                    ious.append(float(row[gi]))
                    drifts.append(abs(float(r.scores[ri]) - float(g.scores[gi])))
        n_match += m
        frac = m / len(r) if len(r) else (1.0 if not len(g) else 0.0)
        if frac < worst_frac:
            worst_image, worst_frac = i, frac
    matched = n_match / n_ref if n_ref else 1.0
    extra = (n_got - n_match) / n_got if n_got else 0.0
    return {"images": len(refs), "reference_detections": n_ref, "detections": n_got, "matched": n_match,
            "matched_fraction": matched, "extra_fraction": extra,
            "iou_mean": float(np.mean(ious)) if ious else None, "iou_min": float(np.min(ious)) if ious else None,
            "score_drift_max": float(np.max(drifts)) if drifts else 0.0,
            "score_drift_mean": float(np.mean(drifts)) if drifts else 0.0,
            "worst_image": worst_image, "worst_image_matched": worst_frac, "iou_threshold": iou,
            "min_score": min_score, "pass": bool(matched >= min_matched and 1.0 - extra >= min_matched)}


def contract_map(dets: DetsLike, labels: Sequence[Any], metas: Sequence[Mapping[str, float]] | None = None,
                 use_pycocotools: bool = True) -> dict[str, float]:
    """COCO mAP50 / mAP50-95 of contract outputs against labels in original-image pixels (bench.metrics)."""
    from edgeconv.bench.metrics import coco_map

    preds = _as_list(dets)
    if metas is not None:
        preds = [to_image_coords(p, m) for p, m in zip(preds, metas)]
    return coco_map(preds, list(labels), use_pycocotools=use_pycocotools)


def verify_detection_outputs(refs: Sequence[Mapping[str, np.ndarray]], gots: Sequence[Mapping[str, np.ndarray]],
                             params: Any, *, iou: float = 0.5, min_score: float = 0.01,
                             min_matched: float = 0.99) -> tuple[bool, list[str], dict[str, Any]]:
    """The pipeline's check for end2end artifacts, in place of tensor tolerances on ``detections``/``candidates``.

    ``refs``/``gots``: reference and artifact outputs per sample (any stage); both go through the post-processor
    (NMS for candidates, pass-through for the contract), then ``compare_detections``.  Returns ``(passed,
    failures, record)`` like ``core.compare.within``; the record is ``compare_detections``' dict.
    """
    from edgeconv.postprocess.beside import apply_postprocessor

    ref_d = [d for r in refs for d in to_detections(*apply_postprocessor(r, params))]
    got_d = [d for g in gots for d in to_detections(*apply_postprocessor(g, params))]
    rec = compare_detections(ref_d, got_d, iou=iou, min_score=min_score, min_matched=min_matched)
    rec["reference_score_max"] = max((float(np.max(d.scores)) for d in ref_d if len(d.scores)), default=None)
    fails = []
    if rec["matched_fraction"] < min_matched:
        fails.append(f"detections matched {rec['matched_fraction']:.4f} < {min_matched} (IoU >= {iou}, "
                     f"score >= {min_score})")
    if 1.0 - rec["extra_fraction"] < min_matched:
        fails.append(f"unmatched extra detections {rec['extra_fraction']:.4f} > {1 - min_matched:.4f}")
    return not fails, fails, rec


def contract_detections(outputs: Mapping[str, np.ndarray]) -> list[Detections]:
    """Harness ``postprocess`` callable (``edgeconv.postprocess.verify:contract_detections``) for outputs that
    already are the contract; artifacts ending earlier need their spec: ``beside.harness_postprocess(art_dir)``."""
    return to_detections(outputs["detections"], outputs["count"])
