"""The base model's anchor answers: as many as a night's dataset calls for, made once per model and
system prompt, and only the missing ones made on a later night."""

from assistant.probes import bundled_general_prompts
from assistant.sleep import ANCHOR_PROMPTS, _anchors, anchor_cache_path, anchors_needed
from lora import TrainConfig


class CountingRuntime:
    """Answers every prompt with its own text; counts what it was asked."""

    def __init__(self):
        self.asked = []

    def chat(self, messages, config):
        q = messages[-1]["content"]
        self.asked.append(q)
        return f"An answer to: {q}", None


def test_anchors_needed_follows_the_new_examples_and_the_style():
    cfg = TrainConfig(anchor_ratio=0.5, habit_ratio=2.0)
    assert anchors_needed(10, cfg, styled=False) == ANCHOR_PROMPTS  # never fewer
    assert anchors_needed(100, cfg, styled=False) == 50
    assert anchors_needed(100, cfg, styled=True) == 250  # habits are restyled anchors too


def test_anchors_grow_with_the_need_and_are_made_once(tmp_path):
    rt = CountingRuntime()
    first = _anchors(tmp_path, rt, "ab" * 32, "Be kind.", log=lambda _: None, n=3)
    prompts = bundled_general_prompts()
    assert [a.prompt for a in first] == prompts[:3] and len(rt.asked) == 3
    again = _anchors(tmp_path, rt, "ab" * 32, "Be kind.", log=lambda _: None, n=2)
    assert [a.prompt for a in again] == prompts[:2] and len(rt.asked) == 3  # from the cache
    more = _anchors(tmp_path, rt, "ab" * 32, "Be kind.", log=lambda _: None, n=5)
    assert [a.prompt for a in more] == prompts[:5] and rt.asked[3:] == prompts[3:5]
    assert more[0].answer == f"An answer to: {prompts[0]}"
    # a dry run makes nothing: the missing ones are named, with a placeholder answer
    dry = _anchors(tmp_path, rt, "ab" * 32, "Be kind.", log=lambda _: None, n=7, make=False)
    assert [a.prompt for a in dry] == prompts[:7] and len(rt.asked) == 5
    assert dry[4].answer == more[4].answer and "generated when training" in dry[6].answer
    assert len(_anchors(tmp_path, rt, "ab" * 32, "Be kind.", log=lambda _: None, n=7)) == 7
    assert rt.asked[5:] == prompts[5:7]  # the placeholders were not cached
    # another system prompt is another cache: the base answers differently under it
    assert anchor_cache_path(tmp_path, "ab" * 32, "Be terse.") != anchor_cache_path(
        tmp_path, "ab" * 32, "Be kind.")
    # a damaged cache is remade, not an error
    anchor_cache_path(tmp_path, "ab" * 32, "Be kind.").write_text("{not json")
    rt2 = CountingRuntime()
    assert len(_anchors(tmp_path, rt2, "ab" * 32, "Be kind.", log=lambda _: None, n=2)) == 2
    assert len(rt2.asked) == 2
