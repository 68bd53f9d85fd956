import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype (exactness checks against autograd Jacobians)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def randomise(module: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    """Move every parameter of ``module`` away from its (often trivial) initial value, deterministically."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def cell_spec(method: str, task: str, *, dim: int | None = None, layers: int = 1, seed: int = 0, budget: int = 3,
              hparams: dict | None = None, task_options: dict | None = None, **eval_settings):
    """The one resolved ``CellSpec`` of a one-cell matrix (through ``matrix.validate``, as the runner gets it)."""
    from ebflow_bench.matrix import matrix_from_dict, validate

    spec = {"name": "one", "methods": [method], "tasks": [task], "layers": [layers], "seeds": [seed],
            "budgets": [budget], "hparams": {method: dict(hparams or {})},
            "task_options": {task: dict(task_options or {})}, "eval": dict(eval_settings)}
    if dim is not None:
        spec["dims"] = [dim]
    (cell,) = validate(matrix_from_dict(spec))
    return cell
