"""Print the boxes of any edgeconv detector artifact, every backend alike: detect.py ARTIFACT_DIR IMAGE..."""
import sys

from edgeconv.calibration.preprocess import Preprocess
from edgeconv.core.artifact import Artifact
from edgeconv.postprocess import load_postprocessor
from edgeconv.targets.registry import get_target

art = Artifact.load(sys.argv[1])
pre = Preprocess.from_dict(art.manifest["preprocess"] or sys.exit(  # the contract it was built and checked with
    f"{art.path} records no preprocessing contract: convert it with --preprocess (what your app feeds the model)"))
post = load_postprocessor(art.path)  # postprocess.json: NMS in the graph, or decode/NMS beside it
with get_target(art.target).runner(art) as model:
    for path in sys.argv[2:]:
        x, m = pre.apply_with_meta(pre.load(path))
        dets, count = post(model.infer({art.inputs[0].name: x}))
        for x1, y1, x2, y2, score, cls in dets[0, : count[0]][dets[0, : count[0], 4] >= 0.25]:
            sx, sy, px, py = m["scale_x"], m["scale_y"], m["pad_x"], m["pad_y"]
            print(f"{path}: class {int(cls)} score {score:.2f} box {(x1 - px) / sx:.0f} {(y1 - py) / sy:.0f} "
                  f"{(x2 - px) / sx:.0f} {(y2 - py) / sy:.0f}")
