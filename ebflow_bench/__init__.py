"""ebflow-bench: the harness (tasks, adapters, metrics, matrix runner, results, report, CLI).

Data flows one way: task -> adapter -> metrics -> results -> report.
"""

__version__ = "0.1.0"
