"""FP32 (PyTorch) quality of the bundled models on their held-out eval split.

Used by the trainer (final metrics in ``<name>.train.log``) and by the slow test that guards the
committed checkpoints.  Images go through the same on-disk JPEG + ``preprocess`` path the
benchmarks use, so these numbers are the FP32 reference the converted models are compared with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def evaluate_bundled(name: str, weights: str | Path | None = None, limit: int | None = None,
                     batch: int = 25) -> dict[str, float]:
    """Metrics of bundled model ``name`` on (the first ``limit`` images of) its eval split."""
    import torch

    from edgeconv.bench.datasets import load_detection_labels, load_imagefolder, preprocess_image
    from edgeconv.bench.metrics import coco_map, topk_accuracy
    from edgeconv.bench.plugins import load_callable
    from edgeconv.zoo import get, load
    from edgeconv.zoo.data import eval_split

    spec = get(name)
    model = load(name, weights)
    post = load_callable(spec.postprocess)

    def run(paths: list[Path]) -> dict[str, np.ndarray]:
        x = np.concatenate([preprocess_image(p, spec.preprocess) for p in paths])
        with torch.no_grad():
            outs = model(torch.from_numpy(x))
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return {n: o.numpy() for n, o in zip(spec.output_names, outs)}

    if spec.task == "detection":
        samples = load_detection_labels(eval_split("detection"))[:limit]
        preds = []
        for i in range(0, len(samples), batch):
            preds.extend(post(run([s[0] for s in samples[i : i + batch]])))
        m = coco_map(preds, [(s[1], s[2]) for s in samples])
        return {"images": len(samples), **{k: round(v, 4) for k, v in m.items()}}
    samples, _ = load_imagefolder(eval_split("classification"))
    samples = samples[:limit] if limit is None else samples[:: max(1, len(samples) // limit)][:limit]
    logits = np.concatenate([run([p for p, _ in samples[i : i + batch]])[spec.output_names[0]]
                             for i in range(0, len(samples), batch)])
    acc = topk_accuracy(logits, np.array([c for _, c in samples]), k=(1,))
    return {"images": len(samples), "top1": round(acc["top1"], 4)}
