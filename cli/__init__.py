"""reverie cli package."""
import os as _os

# OpenMP threads (torch and llama.cpp's ggml) spin while waiting by default. On 2 cores with any
# other work running, that made a training step 7x and llama.cpp decode 8x slower (measured
# under load average 8: decode 3 tok/s spinning vs 20-31 tok/s passive). Set before torch or
# llama_cpp is imported; a user's own OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
