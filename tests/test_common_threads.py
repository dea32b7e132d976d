"""common.threads: the one place the OpenMP wait policy is set; every package's import sets it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "bench", "memory", "lora", "quant")

SCRIPT = """
import importlib, os, sys
os.environ.pop("OMP_WAIT_POLICY", None)
for pkg in sys.argv[1:]:
    os.environ.pop("OMP_WAIT_POLICY", None)
    importlib.import_module(pkg)
    print(pkg, os.environ.get("OMP_WAIT_POLICY"))
"""


def test_each_package_import_sets_passive_and_a_users_choice_wins():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, *PACKAGES], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [x for pkg in PACKAGES for x in (pkg, "PASSIVE")]
    mine = subprocess.run([sys.executable, "-c", "import os, quant; print(os.environ['OMP_WAIT_POLICY'])"],
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.strip()
    assert mine == "ACTIVE"


def test_the_policy_is_spelled_in_one_place():
    spelled = [p.relative_to(ROOT).as_posix() for pkg in ("common", "assistant") + PACKAGES
               for p in (ROOT / pkg).rglob("*.py") if "OMP_WAIT_POLICY" in p.read_text()]
    assert spelled == ["common/threads.py"]
