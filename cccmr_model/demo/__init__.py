"""`cccmr demo`: phantom hospitals, federated CC-CMR on Flower's simulation runtime, evaluation, report.

This package never imports flwr: it drives Flower's executables as subprocesses (`demo.flower`).
"""

from cccmr_model.demo.run import DemoOptions, DemoResult, run_demo

__all__ = ["DemoOptions", "DemoResult", "run_demo"]
