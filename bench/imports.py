"""Import time of `function_app.py` next to `azure.functions` alone: the part of a cold start that is ours.

Each sample is a fresh interpreter that times one `import` (interpreter start-up excluded); the median of
`runs` is reported, so one slow disk read does not decide.
"""

from __future__ import annotations

import statistics
import subprocess
import sys

from bench.world import ROOT

_TIMER = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def import_seconds(module: str, runs: int) -> float:
    """The median seconds `import module` takes in a fresh interpreter started in the repository."""
    samples = [float(subprocess.run([sys.executable, "-c", _TIMER.format(module=module)], cwd=ROOT, check=True,
                                    capture_output=True, text=True, timeout=120).stdout)
               for _ in range(runs)]
    return statistics.median(samples)


def measure(runs: int) -> dict[str, float]:
    return {"function_app": import_seconds("function_app", runs),
            "azure.functions": import_seconds("azure.functions", runs)}


__all__ = ["import_seconds", "measure"]
