"""Tasks: data sets with their ground truth, in a registry with one uniform signature.

The registry, the :class:`Task` dataclass and the task transforms live in :mod:`.base`; the tasks themselves
are split by kind of data: :mod:`.toys` (2-D), :mod:`.gaussians` (any D), :mod:`.images`, :mod:`.tabular`
(scikit-learn tables, UCI folders, the user's own file). Importing this package registers them all.
"""

from __future__ import annotations

from .base import *  # noqa: F401,F403
from .base import (  # noqa: F401
                   _DIM_OF,
                   _FIXED_DIM,
                   _LOG_2PI,
                   _TASKS,
                   Bounds,
                   _from_sampler,
                   _iso_mixture_log_prob,
                   _iso_mixture_sampler,
                   _mixture_task,
                   _sizes,
)
from .gaussians import *  # noqa: F401,F403
from .images import *  # noqa: F401,F403
from .images import _image_task, _region_patches, _stratified_order  # noqa: F401
from .tabular import *  # noqa: F401,F403
from .tabular import (  # noqa: F401
                   DATA_ENV,
                   SKLEARN_TABULAR,
                   UCI_DIMS,
                   file_task_dim,
                   register_file_task,
)
from .toys import *  # noqa: F401,F403
