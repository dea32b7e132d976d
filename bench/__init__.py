"""reverie bench package."""
from common.threads import passive_openmp as _passive_openmp

_passive_openmp()  # before torch or llama_cpp is imported (why: common/threads.py)


def emit(result: dict, out=None) -> None:
    """Print a benchmark's JSON result, and write it to `out` too when given."""
    import json
    from pathlib import Path

    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
