"""reverie lora package: datasets, the training loop and its backends, adapter files (metrics in lora.metrics).

Facade: build a `Dataset` from ledger dataclasses, train it with the one loop `train(backend, ...)`
over a `PeftBackend` (torch) or an `MlxBackend` (MLX) under one `TrainConfig` (`train_peft` and
`train_mlx` are that call spelled out), get an adapter directory (`load_adapter` validates it);
the assistant turns it into a GGUF LoRA with quant's writer. Heavy backends load inside the
backends, never on import.
lora/ never imports memory/, quant/ or assistant/.
"""

from common.threads import passive_openmp as _passive_openmp

_passive_openmp()  # before torch or llama_cpp is imported (why: common/threads.py)
from .adapter import (Adapter, AdapterSpec, Provenance, from_mlx_weights, from_peft_state_dict,
                      load_adapter, save_adapter)
from .config import ALL_TARGETS, TrainConfig
from .dataset import (Anchor, Correction, Dataset, Example, Fact, GoodAnswer, PreferencePair,
                      build_dataset)
from .errors import AdapterMismatch, LoraError
from .loop import Backend, train
from .mlx_trainer import MlxBackend, train_mlx  # mlx itself is imported inside the backend
from .peft_trainer import PeftBackend, train_peft  # so is torch
from .phrasings import phrase
from .training import TrainReport, TrainResult

__all__ = ["ALL_TARGETS", "Adapter", "AdapterMismatch", "AdapterSpec", "Anchor", "Backend", "Correction",
           "Dataset", "Example", "Fact", "GoodAnswer", "LoraError", "MlxBackend", "PeftBackend",
           "PreferencePair", "Provenance",
           "TrainConfig", "TrainReport", "TrainResult", "build_dataset",
           "from_mlx_weights", "from_peft_state_dict", "load_adapter", "phrase",
           "save_adapter", "train", "train_mlx", "train_peft"]
