"""reverie cli package."""
from common.threads import passive_openmp as _passive_openmp

_passive_openmp()  # before torch or llama_cpp is imported (why: common/threads.py)
