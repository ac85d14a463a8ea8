"""JAX starts with enough host devices for chains to run in parallel (causal_wm/jaxhost.py)."""

import os
import subprocess
import sys

from causal_wm.jaxhost import MIN_DEVICES

PROBE = "from causal_wm.jaxhost import start_jax; print(start_jax().local_device_count())"


def _devices(xla_flags: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if xla_flags is not None:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_a_fresh_process_gets_at_least_min_devices():
    assert _devices(None) == max(os.cpu_count() or 1, MIN_DEVICES)


def test_a_users_own_device_count_is_kept():
    assert _devices("--xla_force_host_platform_device_count=3") == 3
