"""The error hierarchy.

Every failure a user can cause or meet is an ``EdgeconvError`` subclass carrying the stage, the target and a hint,
so the CLI can print one line, the hint and an exit code by kind.  Causes are chained (``raise ... from e``) so
``--verbose`` still shows the real traceback.
"""

from __future__ import annotations


class EdgeconvError(Exception):
    """Base of all edgeconv errors. ``exit_code`` is stable per kind (documented in the README)."""

    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None, stage: str | None = None,
                 target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.stage = stage
        self.target = target

    def one_line(self) -> str:
        """The single line the CLI prints: kind, where, what."""
        where = "/".join(x for x in (self.stage, self.target) if x)
        msg = " ".join(self.message.split())
        return f"{self.kind} error{f' [{where}]' if where else ''}: {msg}"


class ConfigError(EdgeconvError):
    """Bad usage, bad profile, bad option value, bad data folder."""

    exit_code = 2
    kind = "config"


class ModelLoadError(EdgeconvError):
    """The model or its weights cannot be loaded (or do not match each other)."""

    exit_code = 3
    kind = "model-load"


class ExportError(EdgeconvError):
    """No exporter produced a verified ONNX graph."""

    exit_code = 4
    kind = "export"


class ConversionError(EdgeconvError):
    """A backend converter failed or produced nothing usable."""

    exit_code = 5
    kind = "conversion"


class VerificationError(EdgeconvError):
    """An artifact was produced but does not compute what the reference computes."""

    exit_code = 6
    kind = "verification"


class MissingDependencyError(EdgeconvError):
    """A backend's Python package is not installed; the hint names the pip extra."""

    exit_code = 7
    kind = "missing-dependency"


class CalibrationError(ConfigError):
    """Calibration data problems (empty, overlapping with eval, wrong shape). Exit code of a config error."""

    kind = "calibration"
