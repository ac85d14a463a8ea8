"""Starting JAX with enough host devices for parallel chains (the only JAX setting we touch).

XLA fixes the number of CPU "devices" when JAX starts, and NumPyro runs chains in parallel only
when there is one device per chain; otherwise it runs them one after another. On CPU a device is
a thread, not a core: measured on 2 cores (flagship, 4 chains x 1,000 draws), 4 devices took 17.5 s
wall and 26 CPU-s against 43 s and 52 CPU-s sequentially. So JAX is started with at least
:data:`MIN_DEVICES` devices (one per core where there are more cores), which also keeps a given
seed's numbers independent of the machine's core count for up to that many chains.
"""

from __future__ import annotations

import os
import sys

MIN_DEVICES = 8
_FLAG = "xla_force_host_platform_device_count"


def start_jax():
    """Import JAX, first setting the host device count if JAX is not running yet.

    A process that imported JAX already keeps its own setting (chains beyond its device count then
    run sequentially). Returns the ``jax`` module.
    """
    if "jax" not in sys.modules and _FLAG not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--{_FLAG}={max(os.cpu_count() or 1, MIN_DEVICES)}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    import jax

    return jax
