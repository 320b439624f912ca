"""The tiny OCR/segmentation models and their data writers (task_models.py) are importable by the task tests."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
