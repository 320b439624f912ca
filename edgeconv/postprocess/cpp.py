"""The dependency-free C++ post-processor (``postprocess.hpp``), generated from the same ``PostprocessSpec``.

Why generated rather than a generic library: every constant (head kind, level sizes, anchors, strides, thresholds)
is baked in as ``constexpr`` from the spec the artifact was built with, so an application on a board without
edgeconv, Python or numpy includes one header and gets the same contract as ``postprocess.py`` (a test compiles it
with g++ and compares the two on saved raw outputs).  C++11, standard library only; one image per call.
"""

from __future__ import annotations

import json

from edgeconv.postprocess.spec import PostprocessSpec, as_spec

_HEAD_IDS = {"yolov5": 0, "yolov8": 1, "yolo-decoded": 2, "centernet": 3, "ssd": 4}

_BODY = r"""
struct Detection {
  float x1, y1, x2, y2, score;
  int cls;
};

namespace detail {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

struct Cand {
  float box[4];
  float score;
  int cls;
  long long key;  // flat index (class-major), the tie-break of every implementation
};

inline bool better(const Cand& a, const Cand& b) {
  return a.score > b.score || (a.score == b.score && a.key < b.key);
}

inline double iou(const float* a, const float* b) {
  double iw = std::min<double>(a[2], b[2]) - std::max<double>(a[0], b[0]);
  double ih = std::min<double>(a[3], b[3]) - std::max<double>(a[1], b[1]);
  iw = iw > 0 ? iw : 0;
  ih = ih > 0 ? ih : 0;
  double wa = double(a[2]) - a[0], ha = double(a[3]) - a[1], wb = double(b[2]) - b[0], hb = double(b[3]) - b[1];
  double area_a = (wa > 0 ? wa : 0) * (ha > 0 ? ha : 0), area_b = (wb > 0 ? wb : 0) * (hb > 0 ? hb : 0);
  double inter = iw * ih, uni = area_a + area_b - inter;
  return uni > 0 ? inter / uni : 0.0;
}

// Greedy NMS over candidates sorted best first; stops at kMaxDet kept (those are the top kMaxDet).
inline std::vector<Detection> greedy(std::vector<Cand>& c, bool per_class) {
  std::stable_sort(c.begin(), c.end(), better);
  std::vector<Detection> out;
  std::vector<char> dead(c.size(), 0);
  for (size_t i = 0; i < c.size() && int(out.size()) < kMaxDet; ++i) {
    if (dead[i]) continue;
    Detection d = {c[i].box[0], c[i].box[1], c[i].box[2], c[i].box[3], c[i].score, c[i].cls};
    out.push_back(d);
    for (size_t j = i + 1; j < c.size(); ++j)
      if (!dead[j] && (!per_class || c[j].cls == c[i].cls) && iou(c[i].box, c[j].box) > kIouThreshold) dead[j] = 1;
  }
  return out;
}

// Keep the pairs >= the kMaxCandidates-th score when more pass the threshold (the pre-NMS cap).
inline void cap(std::vector<Cand>& c) {
  if (int(c.size()) <= kMaxCandidates) return;
  std::vector<float> s(c.size());
  for (size_t i = 0; i < c.size(); ++i) s[i] = c[i].score;
  std::nth_element(s.begin(), s.begin() + (kMaxCandidates - 1), s.end(), [](float a, float b) { return a > b; });
  float kth = s[kMaxCandidates - 1];
  std::vector<Cand> kept;
  for (size_t i = 0; i < c.size(); ++i)
    if (c[i].score >= kth) kept.push_back(c[i]);
  c.swap(kept);
}

// Boxes (A x 4, xyxy) and scores (C x A) of a YOLO head -> candidates.
inline std::vector<Detection> select(const std::vector<float>& boxes, const std::vector<float>& scores, int na) {
  std::vector<Cand> c;
  if (kClassAgnostic) {
    for (int a = 0; a < na; ++a) {
      int best = 0;
      for (int k = 1; k < kNumClasses; ++k)
        if (scores[size_t(k) * na + a] > scores[size_t(best) * na + a]) best = k;
      float s = scores[size_t(best) * na + a];
      if (s > kScoreThreshold) {
        Cand x = {{boxes[4 * a], boxes[4 * a + 1], boxes[4 * a + 2], boxes[4 * a + 3]}, s, best, a};
        c.push_back(x);
      }
    }
  } else {
    for (int k = 0; k < kNumClasses; ++k)
      for (int a = 0; a < na; ++a) {
        float s = scores[size_t(k) * na + a];
        if (s > kScoreThreshold) {
          Cand x = {{boxes[4 * a], boxes[4 * a + 1], boxes[4 * a + 2], boxes[4 * a + 3]}, s, k,
                    (long long)k * na + a};
          c.push_back(x);
        }
      }
  }
  cap(c);
  return greedy(c, !kClassAgnostic);
}

inline void put_box(std::vector<float>& b, int a, float cx, float cy, float w, float h) {
  b[4 * a] = cx - w / 2;
  b[4 * a + 1] = cy - h / 2;
  b[4 * a + 2] = cx + w / 2;
  b[4 * a + 3] = cy + h / 2;
}

inline std::vector<Detection> yolov5(const float* const* outputs) {
  const int no = 5 + kNumClasses;
  int na_total = 0;
  for (int l = 0; l < kNumLevels; ++l) na_total += kAnchorsPerCell * kLevelH[l] * kLevelW[l];
  std::vector<float> boxes(size_t(na_total) * 4), scores(size_t(kNumClasses) * na_total);
  int a = 0;
  for (int l = 0; l < kNumLevels; ++l) {
    const int hw = kLevelH[l] * kLevelW[l];
    const float st = float(kStride[l]);
    for (int k = 0; k < kAnchorsPerCell; ++k)
      for (int p = 0; p < hw; ++p, ++a) {
        const float* base = outputs[l] + size_t(k) * no * hw + p;
        float gx = float(p % kLevelW[l]), gy = float(p / kLevelW[l]);
        float sx = sigmoid(base[0]), sy = sigmoid(base[size_t(hw)]);
        float sw = sigmoid(base[size_t(2) * hw]), sh = sigmoid(base[size_t(3) * hw]);
        float obj = sigmoid(base[size_t(4) * hw]);
        float cx = (sx * 2 - 0.5f + gx) * st, cy = (sy * 2 - 0.5f + gy) * st;
        float w = (sw * 2) * (sw * 2) * kAnchors[l][k][0], h = (sh * 2) * (sh * 2) * kAnchors[l][k][1];
        put_box(boxes, a, cx, cy, w, h);
        for (int c = 0; c < kNumClasses; ++c)
          scores[size_t(c) * na_total + a] = obj > kScoreThreshold ? sigmoid(base[size_t(5 + c) * hw]) * obj : 0.0f;
      }
  }
  return select(boxes, scores, na_total);
}

inline std::vector<Detection> yolov8(const float* const* outputs) {
  int na_total = 0;
  for (int l = 0; l < kNumLevels; ++l) na_total += kLevelH[l] * kLevelW[l];
  std::vector<float> boxes(size_t(na_total) * 4), scores(size_t(kNumClasses) * na_total);
  std::vector<float> e(kRegMax > 0 ? kRegMax : 1);
  int a = 0;
  for (int l = 0; l < kNumLevels; ++l) {
    const int hw = kLevelH[l] * kLevelW[l];
    const float st = float(kStride[l]);
    for (int p = 0; p < hw; ++p, ++a) {
      float dist[4];
      for (int side = 0; side < 4; ++side) {
        if (kRegMax == 1) {
          dist[side] = outputs[l][size_t(side) * hw + p];
          continue;
        }
        float mx = -INFINITY, sum = 0, acc = 0;
        for (int r = 0; r < kRegMax; ++r) mx = std::max(mx, outputs[l][size_t(side * kRegMax + r) * hw + p]);
        for (int r = 0; r < kRegMax; ++r) {
          e[r] = std::exp(outputs[l][size_t(side * kRegMax + r) * hw + p] - mx);
          sum += e[r];
        }
        for (int r = 0; r < kRegMax; ++r) acc += e[r] / sum * float(r);
        dist[side] = acc;
      }
      float ax = float(p % kLevelW[l]) + 0.5f, ay = float(p / kLevelW[l]) + 0.5f;
      boxes[4 * a] = (ax - dist[0]) * st;
      boxes[4 * a + 1] = (ay - dist[1]) * st;
      boxes[4 * a + 2] = (ax + dist[2]) * st;
      boxes[4 * a + 3] = (ay + dist[3]) * st;
      for (int c = 0; c < kNumClasses; ++c)
        scores[size_t(c) * na_total + a] = sigmoid(outputs[l][size_t(4 * kRegMax + c) * hw + p]);
    }
  }
  return select(boxes, scores, na_total);
}

inline std::vector<Detection> decoded(const float* const* outputs) {
  const int na = kDecodedAnchors, cols = 4 + (kObjectness ? 1 : 0) + kNumClasses;
  const float* x = outputs[0];
  std::vector<float> boxes(size_t(na) * 4), scores(size_t(kNumClasses) * na);
  for (int a = 0; a < na; ++a) {
    float v[4];
    for (int j = 0; j < 4; ++j) v[j] = kChannelsFirst ? x[size_t(j) * na + a] : x[size_t(a) * cols + j];
    put_box(boxes, a, v[0], v[1], v[2], v[3]);
    float obj = kObjectness ? (kChannelsFirst ? x[size_t(4) * na + a] : x[size_t(a) * cols + 4]) : 1.0f;
    int off = kObjectness ? 5 : 4;
    for (int c = 0; c < kNumClasses; ++c) {
      float s = kChannelsFirst ? x[size_t(off + c) * na + a] : x[size_t(a) * cols + off + c];
      scores[size_t(c) * na + a] = kObjectness ? s * obj : s;
    }
  }
  return select(boxes, scores, na);
}

// Prior-box head (postprocess.py's decode_ssd, the same float operations): loc (A x 4), conf (A x [1+]C).
inline std::vector<Detection> ssd(const float* const* outputs) {
  const float* loc = outputs[0];
  const float* conf = outputs[1];
  const int ct = kNumClasses + (kBackground ? 1 : 0);
  std::vector<float> pri;  // cx, cy, size per prior, input pixels
  for (int l = 0, off = 0; l < kNumLevels; off += kSsdSizesPerLevel[l], ++l) {
    const int st = kStride[l], fh = (kInputH + st - 1) / st, fw = (kInputW + st - 1) / st;
    for (int i = 0; i < fh; ++i)
      for (int j = 0; j < fw; ++j)
        for (int m = 0; m < kSsdSizesPerLevel[l]; ++m) {
          pri.push_back((float(j) + 0.5f) * float(st));
          pri.push_back((float(i) + 0.5f) * float(st));
          pri.push_back(kSsdMinSizes[off + m]);
        }
  }
  const int na = int(pri.size() / 3);
  std::vector<float> boxes(size_t(na) * 4), scores(size_t(kNumClasses) * na), p(ct);
  for (int a = 0; a < na; ++a) {
    const float* d = loc + size_t(a) * 4;
    const float sz = pri[3 * a + 2], sv = sz * kSsdVariance0;
    const float cx = pri[3 * a] + d[0] * sv, cy = pri[3 * a + 1] + d[1] * sv;
    const float w = sz * std::exp(d[2] * kSsdVariance1), h = sz * std::exp(d[3] * kSsdVariance1);
    put_box(boxes, a, cx, cy, w, h);
    const float* c = conf + size_t(a) * ct;
    if (kConfSoftmax) {
      float mx = c[0], sum = 0;
      for (int k = 1; k < ct; ++k) mx = std::max(mx, c[k]);
      for (int k = 0; k < ct; ++k) sum += (p[k] = std::exp(c[k] - mx));
      for (int k = 0; k < ct; ++k) p[k] /= sum;
    } else {
      for (int k = 0; k < ct; ++k) p[k] = c[k];
    }
    for (int k = 0; k < kNumClasses; ++k) scores[size_t(k) * na + a] = p[k + (kBackground ? 1 : 0)];
  }
  return select(boxes, scores, na);
}

inline std::vector<Detection> centernet(const float* const* outputs) {
  const int h = kLevelH[0], w = kLevelW[0], hw = h * w;
  const float* wh = outputs[1];
  const float* off = outputs[2];
  std::vector<float> hm(outputs[0], outputs[0] + size_t(kNumClasses) * hw);
  if (!kHeatmapSigmoid)
    for (size_t i = 0; i < hm.size(); ++i) hm[i] = sigmoid(hm[i]);
  std::vector<Cand> c;
  for (int k = 0; k < kNumClasses; ++k)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        float v = hm[size_t(k) * hw + y * w + x];
        if (!(v > kScoreThreshold)) continue;
        bool peak = true;
        for (int dy = -1; dy <= 1 && peak; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            int yy = y + dy, xx = x + dx;
            if (yy >= 0 && yy < h && xx >= 0 && xx < w && hm[size_t(k) * hw + yy * w + xx] > v) {
              peak = false;
              break;
            }
          }
        if (!peak) continue;
        Cand cd = {{0, 0, 0, 0}, v, k, (long long)k * hw + y * w + x};
        c.push_back(cd);
      }
  size_t n = std::min<size_t>(c.size(), size_t(kMaxDet));
  std::partial_sort(c.begin(), c.begin() + n, c.end(), better);
  std::vector<Detection> out;
  const float st = float(kStride[0]);
  for (size_t i = 0; i < n; ++i) {
    int pix = int(c[i].key % hw), y = pix / w, x = pix % w;
    float cx = (float(x) + off[pix]) * st, cy = (float(y) + off[hw + pix]) * st;
    float bw = wh[pix] * st, bh = wh[hw + pix] * st;
    Detection d = {cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, c[i].score, c[i].cls};
    out.push_back(d);
  }
  return out;
}

}  // namespace detail

// outputs[i]: the raw output kOutputNames[i] of ONE image (its batch slice), float32, laid out as the reference
// ONNX declares it (NCHW maps; the runners of every edgeconv backend return this layout).  Best first, <= kMaxDet.
inline std::vector<Detection> run(const float* const* outputs) {
  switch (kHead) {
    case 0: return detail::yolov5(outputs);
    case 1: return detail::yolov8(outputs);
    case 2: return detail::decoded(outputs);
    case 4: return detail::ssd(outputs);
    default: return detail::centernet(outputs);
  }
}

// Decoded top-M candidates (M rows of x1 y1 x2 y2 score class; a graph without an NMS op), n valid -> NMS.
inline std::vector<Detection> from_candidates(const float* cand, int n) {
  std::vector<detail::Cand> c;
  for (int i = 0; i < n; ++i) {
    const float* r = cand + size_t(i) * 6;
    detail::Cand x = {{r[0], r[1], r[2], r[3]}, r[4], int(r[5]), i};
    c.push_back(x);
  }
  return detail::greedy(c, !kClassAgnostic);
}

// The contract for one image: dets holds kMaxDet * 6 floats (x1 y1 x2 y2 score class); rows past the count are 0.
inline int to_contract(const std::vector<Detection>& d, float* dets) {
  std::fill(dets, dets + size_t(kMaxDet) * 6, 0.0f);
  int n = int(std::min<size_t>(d.size(), size_t(kMaxDet)));
  for (int i = 0; i < n; ++i) {
    float* r = dets + size_t(i) * 6;
    r[0] = d[i].x1; r[1] = d[i].y1; r[2] = d[i].x2; r[3] = d[i].y2; r[4] = d[i].score; r[5] = float(d[i].cls);
  }
  return n;
}

inline int run_contract(const float* const* outputs, float* dets) { return to_contract(run(outputs), dets); }
"""


def _arr(values: list, fmt: str = "{}") -> str:
    return "{" + ", ".join(fmt.format(v) for v in values) + "}"


def render_header(params: PostprocessSpec | object) -> str:
    """The text of ``postprocess.hpp`` for ``params``."""
    spec = as_spec(params)  # type: ignore[arg-type]
    dec = spec.decode
    if dec.head != "yolo-decoded" and not dec.output_shapes:
        from edgeconv.core.errors import ConfigError

        raise ConfigError("post-processing: the C++ header needs output_shapes in the decode parameters",
                          hint="derive them with spec_for(prepared)", stage="postprocess")
    shapes = list(dec.output_shapes) if dec.head not in ("yolo-decoded", "ssd") else []
    lh = [int(s[2]) for s in shapes] or [1]
    lw = [int(s[3]) for s in shapes] or [1]
    ssd_sizes = [float(v) for lvl in dec.min_sizes for v in lvl] or [0.0]
    ssd_per_level = [len(lvl) for lvl in dec.min_sizes] or [0]
    strides = list(dec.strides) or [1]
    anchors = dec.anchors or ((( 0.0, 0.0),),)
    na = len(anchors[0])
    anc = "{" + ", ".join("{" + ", ".join(f"{{{w!r}f, {h!r}f}}" for w, h in lvl) + "}" for lvl in anchors) + "}"
    dec_a = 1
    if dec.head == "yolo-decoded" and dec.output_shapes:
        s = dec.output_shapes[0]
        dec_a = int(s[2] if dec.channels_first else s[1])
    names = ", ".join(json.dumps(n) for n in dec.outputs)
    levels = len(shapes) if dec.head in ("yolov5", "yolov8") else len(dec.min_sizes) if dec.head == "ssd" else 1
    consts = f"""constexpr int kHead = {_HEAD_IDS[dec.head]};  // {dec.head}
constexpr int kNumClasses = {dec.num_classes};
constexpr int kInputH = {dec.input_size[0]}, kInputW = {dec.input_size[1]};
constexpr int kMaxDet = {spec.max_det};
constexpr float kScoreThreshold = {float(spec.score_threshold)!r}f;
constexpr double kIouThreshold = {float(spec.iou_threshold)!r};
constexpr bool kClassAgnostic = {"true" if spec.class_agnostic else "false"};
constexpr int kMaxCandidates = {spec.max_candidates};
constexpr int kNumOutputs = {len(dec.outputs)};
static const char* const kOutputNames[kNumOutputs] = {{{names}}};
constexpr int kNumLevels = {levels};
static const int kLevelH[] = {_arr(lh)};
static const int kLevelW[] = {_arr(lw)};
static const int kStride[] = {_arr(strides)};
constexpr int kAnchorsPerCell = {na};
static const float kAnchors[][{na}][2] = {anc};
constexpr int kRegMax = {dec.reg_max};
constexpr int kDecodedAnchors = {dec_a};
constexpr bool kChannelsFirst = {"true" if dec.channels_first else "false"};
constexpr bool kObjectness = {"true" if dec.objectness else "false"};
constexpr bool kHeatmapSigmoid = {"true" if dec.heatmap_sigmoid else "false"};
static const int kSsdSizesPerLevel[] = {_arr(ssd_per_level)};
static const float kSsdMinSizes[] = {_arr(ssd_sizes, "{!r}f")};
constexpr float kSsdVariance0 = {float(dec.variances[0])!r}f, kSsdVariance1 = {float(dec.variances[1])!r}f;
constexpr bool kBackground = {"true" if dec.background else "false"};
constexpr bool kConfSoftmax = {"true" if dec.conf_softmax else "false"};
"""
    head = ("// postprocess.hpp: edgeconv detections post-processor, generated from postprocess.json "
            f"({spec.schema}). Do not edit;\n// regenerate with edgeconv.postprocess.write_postprocessor. "
            "C++11, standard library only.\n// Contract: rows x1 y1 x2 y2 score class in input pixels, best first "
            "(same as postprocess.py).\n")
    return (head + "#pragma once\n#include <algorithm>\n#include <cmath>\n#include <cstddef>\n#include <vector>\n\n"
            "namespace edgeconv_post {\n\n" + consts + _BODY + "\n}  // namespace edgeconv_post\n")
