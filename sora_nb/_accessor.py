"""``Dataset.sora`` (:class:`sora_nb.trace.TraceAccessor`), registered with xarray when sora_nb is imported.

Registered here, not in :mod:`sora_nb.trace`, so that ``import sora_nb`` gives every dataset its ``.sora`` (a
trace opened with plain ``xarray.open_dataset`` included) without importing torch until ``.sora`` is used.
"""

from __future__ import annotations

from typing import Any

import xarray as xr


@xr.register_dataset_accessor("sora")
def _sora(ds: xr.Dataset) -> Any:
    """xarray calls this with the dataset the first time its ``.sora`` is read."""
    from .trace import TraceAccessor

    return TraceAccessor(ds)
