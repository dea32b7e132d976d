"""The OpenMP thread policy, set once for every entry point (cli, bench, and each library package).

OpenMP threads (torch and llama.cpp's ggml) spin while waiting by default. On 2 cores with any
other work running, that made a training step 7x and llama.cpp decode 8x slower (measured
under load average 8: decode 3 tok/s spinning vs 20-31 tok/s passive).
"""
from __future__ import annotations

import os


WAIT_POLICY = "OMP_WAIT_POLICY"  # the variable's name, for callers that report it


def passive_openmp() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user chose one. Must run before torch or llama_cpp is
    imported (OpenMP reads it once), so each package's __init__ calls it first."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
