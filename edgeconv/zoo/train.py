"""Reproducible CPU training of the bundled demo models.

    python -m edgeconv.zoo.train yolo|centernet|classifier [--steps N] [--out DIR]
    python -m edgeconv.zoo.train eval yolo|centernet|classifier     # re-measure a checkpoint

Why this shape: the checkpoints are committed, so anyone must be able to reproduce them on a laptop
CPU in minutes.  Seeds are fixed, the training images are rendered deterministically from
``(TRAIN_SEED, index)`` (cached as ``.npz`` under the edgeconv cache so reruns skip rendering),
augmentation draws from a seeded numpy Generator, and ``torch.set_num_threads(2)`` pins the
intra-op parallelism.  The weights written are the EMA weights (much better than the raw weights
after a short schedule).  The log records config, losses (twice per epoch), wall and CPU time and the final metrics
measured on the held-out eval split (``edgeconv.zoo.data.eval_split``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path

# Shared CPUs: with the default (active) OpenMP wait policy, a thread waiting at a barrier for a
# descheduled sibling burns its time slice spinning, which made training ~3x slower on a loaded
# 2-core machine.  Must be set before torch (libgomp) initialises.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgeconv.zoo import data as D

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

CONFIGS: dict[str, dict] = {
    "yolo": {
        "steps": 1100, "batch": 16, "lr": 2e-3, "min_lr_frac": 0.02, "warmup": 100, "weight_decay": 0.01,
        "ema": 0.999, "ema_tau": 150, "n_train": 4000, "seed": 0,
    },
    "centernet": {
        "steps": 850, "batch": 16, "lr": 2e-3, "min_lr_frac": 0.02, "warmup": 100, "weight_decay": 0.01,
        "ema": 0.999, "ema_tau": 150, "n_train": 4000, "seed": 0,
    },
    "classifier": {
        "steps": 600, "batch": 64, "lr": 3e-3, "min_lr_frac": 0.02, "warmup": 50, "weight_decay": 0.01,
        "ema": 0.998, "ema_tau": 100, "n_train": 8000, "seed": 0,
    },
}


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _jpeg_quality(i: int) -> int:
    return 70 + (i * 7919) % 26  # deterministic 70..95, matches the q90 eval JPEGs on average


def train_detection_set(n: int, size: int = D.DET_SIZE) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Render (or load from cache) ``n`` JPEG-round-tripped training images with boxes/classes."""
    path = D.cache_root() / "train" / f"det-{D.GENERATOR_VERSION}-{D.TRAIN_SEED}-{n}-{size}.npz"
    if path.is_file():
        z = np.load(path)
        splits = np.cumsum(z["counts"])[:-1]
        return z["images"], np.split(z["boxes"], splits), np.split(z["classes"], splits)
    imgs = np.empty((n, size, size, 3), np.uint8)
    boxes, classes = [], []
    for i in range(n):
        img, b, c = D.render_detection(D.TRAIN_SEED, i, size)
        imgs[i] = D.jpeg_roundtrip(img, _jpeg_quality(i))
        boxes.append(b)
        classes.append(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=imgs, boxes=np.concatenate(boxes), classes=np.concatenate(classes),
             counts=np.array([len(c) for c in classes]))
    tmp.replace(path)
    return imgs, boxes, classes


def train_classification_set(n: int, size: int = D.CLS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    path = D.cache_root() / "train" / f"cls-{D.GENERATOR_VERSION}-{D.TRAIN_SEED}-{n}-{size}.npz"
    if path.is_file():
        z = np.load(path)
        return z["images"], z["labels"]
    imgs = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        img, c = D.render_classification(D.TRAIN_SEED, i, size)
        imgs[i] = D.jpeg_roundtrip(img, _jpeg_quality(i))
        labels[i] = c
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=imgs, labels=labels)
    tmp.replace(path)
    return imgs, labels


def dihedral(img: np.ndarray, boxes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply one of the 8 flips/transposes (k in 0..7) to an image and its xyxy boxes.

    All shape classes are invariant under these, so this is label-preserving 8x augmentation.
    """
    h, w = img.shape[:2]
    b = boxes.copy()
    if k & 1:  # horizontal flip
        img = img[:, ::-1]
        b[:, [0, 2]] = w - boxes[:, [2, 0]]
    if k & 2:  # vertical flip
        img = img[::-1]
        b2 = b.copy()
        b[:, [1, 3]] = h - b2[:, [3, 1]]
    if k & 4:  # transpose
        img = img.transpose(1, 0, 2)
        b = b[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(img), b


def to_tensor(imgs: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] (the bundled models' preprocess), channels_last memory."""
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
    return t.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------------------------
# Training loop pieces
# ----------------------------------------------------------------------------------------------


class ModelEMA:
    """Exponential moving average of all float state (weights + BN stats), with a warm-up ramp."""

    def __init__(self, model: torch.nn.Module, decay: float, tau: float) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.state[k].copy_(v)


def _optimizer(model: torch.nn.Module, lr: float, wd: float) -> torch.optim.Optimizer:
    """AdamW; no weight decay on BN params and biases (standard, avoids shrinking BN scales)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999)
    )


def _lr_at(step: int, cfg: dict) -> float:
    if step < cfg["warmup"]:
        return cfg["lr"] * (step + 1) / cfg["warmup"]
    p = (step - cfg["warmup"]) / max(1, cfg["steps"] - cfg["warmup"])
    lo = cfg["lr"] * cfg["min_lr_frac"]
    return lo + 0.5 * (cfg["lr"] - lo) * (1 + math.cos(math.pi * p))


class Log:
    """Tee to stdout and the committed ``<name>.train.log``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("w")

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.f.write(msg + "\n")
        self.f.flush()


def _seed_all(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# Batch builders
# ----------------------------------------------------------------------------------------------


def _yolo_batch(rng, imgs, boxes, classes, bs):
    idx = rng.integers(0, len(imgs), size=bs)
    out, tgts = [], []
    size = imgs.shape[1]
    for bi, i in enumerate(idx):
        img, b = dihedral(imgs[i], boxes[i], int(rng.integers(0, 8)))
        out.append(img)
        c = classes[i]
        xywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        tgts.append(np.concatenate([np.full((len(c), 1), bi), c[:, None], xywh / size], 1))
    return to_tensor(np.stack(out)), torch.from_numpy(np.concatenate(tgts).astype(np.float32))


def gaussian_radius(h: float, w: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius so a box shifted within it still has IoU >= min_overlap with the GT."""
    a1, b1, c1 = 1, h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def centernet_targets(boxes: np.ndarray, classes: np.ndarray, nc: int, out: int, stride: int):
    """Heatmap (nc,out,out) with Gaussian peaks, and per-object (index, wh, offset) regression targets."""
    hm = np.zeros((nc, out, out), np.float32)
    ys, xs = np.ogrid[0:out, 0:out]
    inds, whs, offs = [], [], []
    for (x0, y0, x1, y1), c in zip(boxes / stride, classes):
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ix, iy = min(int(cx), out - 1), min(int(cy), out - 1)
        r = max(0, int(gaussian_radius(h, w)))
        sigma = (2 * r + 1) / 6
        g = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma * sigma))
        hm[c] = np.maximum(hm[c], g)
        inds.append(iy * out + ix)
        whs.append((w, h))
        offs.append((cx - ix, cy - iy))
    wh_t = np.array(whs, np.float32).reshape(-1, 2)
    return hm, np.array(inds, np.int64), wh_t, np.array(offs, np.float32).reshape(-1, 2)


def _centernet_batch(rng, imgs, boxes, classes, bs, nc, stride=4):
    idx = rng.integers(0, len(imgs), size=bs)
    size = imgs.shape[1]
    out = size // stride
    ims, hms, bidx, inds, whs, offs = [], [], [], [], [], []
    for bi, i in enumerate(idx):
        img, b = dihedral(imgs[i], boxes[i], int(rng.integers(0, 8)))
        hm, ind, wh, off = centernet_targets(b, classes[i], nc, out, stride)
        ims.append(img)
        hms.append(hm)
        bidx.append(np.full(len(ind), bi))
        inds.append(ind)
        whs.append(wh)
        offs.append(off)
    return (
        to_tensor(np.stack(ims)),
        torch.from_numpy(np.stack(hms)),
        torch.from_numpy(np.concatenate(bidx)),
        torch.from_numpy(np.concatenate(inds)),
        torch.from_numpy(np.concatenate(whs)),
        torch.from_numpy(np.concatenate(offs)),
    )


# ----------------------------------------------------------------------------------------------
# Per-model training
# ----------------------------------------------------------------------------------------------


def _fit(name: str, model: torch.nn.Module, cfg: dict, step_fn: Callable, log: Log, log_every: int) -> dict:
    model = model.to(memory_format=torch.channels_last).train()
    opt = _optimizer(model, cfg["lr"], cfg["weight_decay"])
    ema = ModelEMA(model, cfg["ema"], cfg["ema_tau"])
    t0 = time.time()
    acc: dict[str, float] = {}
    n_acc = 0
    for step in range(cfg["steps"]):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss, parts = step_fn(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        ema.update(model)
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if (step + 1) % log_every == 0 or step + 1 == cfg["steps"]:
            means = " ".join(f"{k}={v / n_acc:.4f}" for k, v in acc.items())
            epoch = (step + 1) * cfg["batch"] / cfg["n_train"]
            log(f"epoch {epoch:5.2f} step {step + 1:5d} lr={_lr_at(step, cfg):.2e} {means} "
                f"elapsed={time.time() - t0:6.1f}s cpu={time.process_time():7.1f}s")
            acc, n_acc = {}, 0
    return {k: v.contiguous() for k, v in ema.state.items()}


def train(name: str, steps: int | None = None, out_dir: Path = WEIGHTS_DIR) -> Path:
    """Train ``name`` from scratch and write ``<out_dir>/<name>.pth`` + ``<name>.train.log``."""
    from edgeconv.zoo import BUNDLED

    torch.set_num_threads(2)
    cfg = dict(CONFIGS[name])
    if steps is not None:
        cfg["steps"] = steps
    rng = _seed_all(cfg["seed"])
    log = Log(out_dir / f"{name}.train.log")
    log(f"# edgeconv.zoo.train {name}  ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    log(f"config {json.dumps(cfg)}")
    log(f"env torch={torch.__version__} numpy={np.__version__} python={platform.python_version()} "
        f"threads={torch.get_num_threads()} machine={platform.machine()}")
    t_start = time.time()
    model = _build(name)
    log(f"params {sum(p.numel() for p in model.parameters())}")

    if name == "yolo":
        from edgeconv.zoo.losses import YoloLoss

        imgs, boxes, classes = train_detection_set(cfg["n_train"])
        crit = YoloLoss(D.NUM_CLASSES)

        def step_fn(m):
            x, t = _yolo_batch(rng, imgs, boxes, classes, cfg["batch"])
            return crit(m(x), t)
    elif name == "centernet":
        from edgeconv.zoo.losses import focal_heatmap_loss

        imgs, boxes, classes = train_detection_set(cfg["n_train"])

        def step_fn(m):
            x, hm, bi, ind, wh, off = _centernet_batch(rng, imgs, boxes, classes, cfg["batch"], D.NUM_CLASSES)
            p_hm, p_wh, p_off = m(x)
            l_hm = focal_heatmap_loss(p_hm, hm)
            n, _, h, w = p_wh.shape
            pw = p_wh.permute(0, 2, 3, 1).reshape(n, h * w, 2)[bi, ind]
            po = p_off.permute(0, 2, 3, 1).reshape(n, h * w, 2)[bi, ind]
            l_wh = torch.nn.functional.l1_loss(pw, wh) * 0.1
            l_off = torch.nn.functional.l1_loss(po, off)
            parts = {"hm": float(l_hm.detach()), "wh": float(l_wh.detach()), "off": float(l_off.detach())}
            return l_hm + l_wh + l_off, parts
    else:
        imgs, labels = train_classification_set(cfg["n_train"])
        ls = torch.nn.CrossEntropyLoss(label_smoothing=0.05)

        def step_fn(m):
            idx = rng.integers(0, len(imgs), size=cfg["batch"])
            x = np.stack([dihedral(imgs[i], np.zeros((0, 4), np.float32), int(rng.integers(0, 8)))[0] for i in idx])
            return ls(m(to_tensor(x)), torch.from_numpy(labels[idx])), {}

    log(f"data ready: {len(imgs)} training images (seed {D.TRAIN_SEED}) in {time.time() - t_start:.1f}s")
    log_every = max(1, cfg["n_train"] // cfg["batch"] // 2)  # twice per epoch
    state = _fit(name, model, cfg, step_fn, log, log_every)
    t_train = time.time() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    wpath = out_dir / f"{name}.pth"
    tmp = wpath.with_suffix(".pth.tmp")
    torch.save(state, tmp)
    tmp.replace(wpath)
    log(f"saved {wpath.name} ({wpath.stat().st_size / 1e6:.2f} MB) total wall time {t_train:.1f}s "
        f"({t_train / 60:.1f} min), process cpu time {time.process_time():.1f}s "
        "(wall > cpu/2 means the 2 cores were shared with other work)")
    assert BUNDLED[name].weights.name == wpath.name
    metrics = _evaluate(name, wpath)
    log(f"final eval {json.dumps(metrics)}")
    return wpath


def _build(name: str) -> torch.nn.Module:
    from edgeconv.bench.plugins import load_callable
    from edgeconv.zoo import BUNDLED

    return load_callable(BUNDLED[name].factory)()


def _evaluate(name: str, weights: Path) -> dict:
    from edgeconv.zoo.evaluate import evaluate_bundled

    t = time.time()
    m = evaluate_bundled(name, weights=weights)
    m["eval_seconds"] = round(time.time() - t, 1)
    return m


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the bundled demo models on CPU (reproducible).")
    p.add_argument("cmd", choices=["yolo", "centernet", "classifier", "eval"])
    p.add_argument("name", nargs="?", help="model to evaluate (with 'eval')")
    p.add_argument("--steps", type=int, default=None, help="override the number of optimizer steps")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    a = p.parse_args(argv)
    if a.cmd == "eval":
        torch.set_num_threads(2)
        metrics = _evaluate(a.name, a.out / f"{a.name}.pth")
        print(json.dumps(metrics))
        log_path = a.out / f"{a.name}.train.log"
        if log_path.exists():
            with log_path.open("a") as f:
                f.write(f"re-eval {json.dumps(metrics)}\n")
    else:
        train(a.cmd, a.steps, a.out)


if __name__ == "__main__":
    main()
