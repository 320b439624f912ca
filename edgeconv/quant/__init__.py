"""INT8 that keeps its promise: layer sensitivity ranking, the automatic float fallback search and route/preset
alternatives, all backend-agnostic (the caller supplies the conversion as a function).

- ``rank_layers(reference_onnx, calibration_feeds, statistics)`` → ``[Ranked(node, module, score)]``
- ``repair(build, ranked, budget, max_attempts)`` → ``RepairResult`` (the fewest layers kept in float)
- ``pipeline_builder(prep, target, ...)`` → a ``build`` over ``edgeconv.pipeline.convert_reference``
- ``routes.ROUTES`` / ``routes.alternatives(backend)`` → option overrides to loop over
"""

from edgeconv.quant.fallback import RepairResult, as_patterns, pipeline_builder, repair
from edgeconv.quant.routes import ROUTES, alternatives, search_routes
from edgeconv.quant.sensitivity import Ranked, rank_layers

__all__ = ["ROUTES", "Ranked", "RepairResult", "alternatives", "as_patterns", "pipeline_builder", "rank_layers",
           "repair", "search_routes"]
