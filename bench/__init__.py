"""reverie bench package."""
import os as _os

# OpenMP threads (torch and llama.cpp's ggml) spin while waiting by default. On 2 cores with any
# other work running, that made a training step 7x and llama.cpp decode 8x slower (measured
# under load average 8: decode 3 tok/s spinning vs 20-31 tok/s passive). Set before torch or
# llama_cpp is imported; a user's own OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def emit(result: dict, out=None) -> None:
    """Print a benchmark's JSON result, and write it to `out` too when given."""
    import json
    from pathlib import Path

    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
