"""``edgeconv tune``: choose the fastest artifact within the accuracy budget for a device.

The search space is what the installed targets and the device's profiles allow (``space``): backend × precision ×
the runtime options that change speed (threads, throughput streams, ncnn fp16 arithmetic, OpenVINO's hint and bf16
where the CPU has it, TFLite's input layout). Every candidate is converted through the same plan as ``convert`` and
``run`` (``edgeconv.plan``) — so it is verified like any artifact — and measured with the same harness
(``edgeconv.bench.evaluate``); ``pareto`` keeps those within the budget and picks the front and the recommendation.
"""

from edgeconv.tune.pareto import Point, pareto_front, recommend, within_budget
from edgeconv.tune.space import Candidate, candidates

__all__ = ["Candidate", "Point", "candidates", "pareto_front", "recommend", "within_budget"]
