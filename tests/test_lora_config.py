import pytest

from lora.config import ALL_TARGETS, TrainConfig
from lora.errors import LoraError


def test_defaults_are_valid_and_cover_all_projections():
    c = TrainConfig()
    assert c.rank == 8 and c.alpha == 16
    assert c.target_modules == ALL_TARGETS
    assert c.scale == 2.0


def test_every_field_has_help():
    h = TrainConfig.help()
    assert set(h) == set(TrainConfig().to_dict())
    assert all(h.values())


def test_lists_every_problem_at_once_with_a_fix():
    with pytest.raises(LoraError) as e:
        TrainConfig(rank=0, learning_rate=-1, target_modules=("q_proj", "bogus"), dropout=1.5)
    msg = str(e.value)
    for word in ("rank", "learning_rate", "bogus", "dropout"):
        assert word in msg
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(spike_factor=1.0), dict(steps=-1),
                                dict(steps=0, epochs=0), dict(device="tpu"), dict(holdout_fraction=0.7),
                                dict(max_seq_len=4), dict(checkpoint_every=-2)])
def test_rejects_bad_values(kw):
    with pytest.raises(LoraError):
        TrainConfig(**kw)


def test_total_steps_from_epochs_is_capped_and_steps_win():
    assert TrainConfig(steps=7).total_steps(1000) == 7
    assert TrainConfig(epochs=2, batch_size=4).total_steps(10) == 6
    assert TrainConfig(epochs=100, max_steps=50).total_steps(100) == 50


def test_round_trip_and_unknown_keys():
    c = TrainConfig(rank=4, target_modules=["q_proj", "v_proj"])
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(LoraError, match="unknown"):
        TrainConfig.from_dict({"rnak": 4})
