"""The loop stop: quant.loops.LoopDetector on its own, inside Runtime.stream (a scripted backend),
and on the real default model through the chat's settings."""
import re

import pytest

from quant.errors import QuantError
from quant.loops import MIN_SENTENCE_WORDS, LoopDetector, normalize_sentence
from quant.runtime import GenerationConfig, Runtime


def words(text):
    """Word-sized pieces with their leading space, as a tokenizer streams them."""
    return re.findall(r"\s*\S+", text)


def chunks(text, size=3):
    """Pieces that cut across words and punctuation: the rules must not depend on where they fall."""
    return [text[i:i + size] for i in range(0, len(text), size)]


def feed(text, split=words, **kw):
    det = LoopDetector(**kw)
    for piece in split(text):
        if det.feed(piece) is not None:
            break
    return det


CULINARY = ("Sure! I'm happy to help you with your culinary skills. "
            + "I'm happy to help you with your culinary skills. " * 6)

RECIPE = """Here is a simple recipe:
1. Add the flour to the bowl and stir.
2. Add the sugar to the bowl and stir.
3. Add the eggs to the bowl and stir.
4. Add the milk to the bowl and stir.
5. Pour the batter into a pan and bake it for 30 minutes.
6. Let it cool. Serve it with fresh berries and a little cream."""

TIPS = """Here are three tips for saving money:
- **Make a budget:** Write down what you earn and what you spend each month.
- **Cook at home:** Eating out costs much more than cooking your own meals.
- **Wait before you buy:** Give yourself a day before any purchase you did not plan.
Saving money takes practice, but small steps add up over time."""


@pytest.mark.parametrize("split", [words, chunks])
def test_repeated_sentence_stops_at_its_second_copy(split):
    det = feed(CULINARY, split)
    assert det.cut is not None and det.rule in ("sentence", "ngram")
    kept = det.text[:det.cut]
    assert kept.strip() == "Sure! I'm happy to help you with your culinary skills."
    # stopped right after the second copy finished, not after seven
    assert len(det.text) < len(CULINARY) / 3


def test_long_sentence_loop_is_caught_by_the_token_ngram_before_it_ends():
    sentence = ("The best way to learn to cook is to start with simple recipes that use fresh "
                "ingredients and to practise them every day until you feel confident in the kitchen. ")
    det = feed("Great question! " + sentence * 4)
    assert det.rule == "ngram"
    assert det.text[:det.cut].strip() == "Great question! " + sentence.strip()
    assert len(det.text) < len("Great question! " + sentence * 2)


def test_run_on_loop_without_punctuation_stops():
    det = feed("You can try " + "the red one and the blue one and " * 10)
    assert det.rule == "ngram"
    kept = det.text[:det.cut]
    assert kept.count("the red one and the blue one") == 1


@pytest.mark.parametrize("text", [RECIPE, TIPS])
@pytest.mark.parametrize("split", [words, chunks])
def test_lists_with_repeated_structure_run_to_the_end(text, split):
    det = feed(text, split)
    assert det.cut is None and det.text == text


def test_a_repeated_list_item_is_a_loop():
    item = "Practice regularly to improve your skills."
    det = feed(f"Tips:\n1. {item}\n2. Read cookbooks for new ideas.\n3. {item}\n4. {item}")
    assert det.rule == "sentence"
    assert det.text[:det.cut].rstrip().endswith("2. Read cookbooks for new ideas.")


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@pytest.mark.parametrize("split", [words, chunks])
def test_a_list_of_short_items_that_starts_over_stops_after_the_first_round(split):
    days = "\n".join(f"{i + 1}. {DAYS[i % 7]}" for i in range(30))
    det = feed("Here are the days of the week:\n\n" + days, split)
    assert det.rule == "sentence"
    assert det.text[:det.cut].rstrip().endswith("7. Sunday")


def test_a_short_sentence_said_over_and_over_stops():
    det = feed("Mix well. " * 8)
    assert det.text[:det.cut].strip() == "Mix well."


@pytest.mark.parametrize("text", ["Yes. Yes.", "Mix well. Mix well. Mix well.", "Hello!", "",
                                  "Stir. Stir. Stir. Let it rest. Stir. Stir.",
                                  "Stir. Add salt. Stir. Add salt.",
                                  "1. Monday\n2. Tuesday\n3. Wednesday\n4. Monday\n5. Tuesday"])
def test_short_texts_and_short_sentences_are_unaffected(text):
    assert feed(text).cut is None


def test_the_detector_is_done_once_it_has_cut():
    det = feed(CULINARY)
    cut = det.cut
    assert det.feed(" more text") == cut and det.cut == cut


def test_normalize_sentence_drops_markers_case_and_punctuation():
    assert normalize_sentence("  2. **Stir** the Soup!") == normalize_sentence("- stir the soup") \
        == "stir the soup"


def test_bad_detector_parameters():
    with pytest.raises(ValueError, match="ngram"):
        LoopDetector(ngram=1)
    with pytest.raises(ValueError, match="min_sentence_words"):
        LoopDetector(min_sentence_words=0)


# --- inside Runtime.stream: the one path every backend uses ----------------------------------

class Scripted(Runtime):
    """A backend that 'generates' a fixed text, one word per token, and counts what it produced."""
    backend = "scripted"

    def __init__(self, script, stop=("<|end|>",)):
        from quant.chat_format import ChatFormat

        super().__init__(model=None, chat_format=ChatFormat("t", stop, ""), n_ctx=4096, threads=1)
        self.script = script
        self.produced = 0

    def tokenize(self, text, add_bos=True):
        return [0] * (len(text.split()) + add_bos)

    def _generate_tokens(self, prompt_ids, config, max_tokens):
        self.produced = 0
        pieces = words(self.script)
        for piece in pieces[:max_tokens]:
            self.produced += 1
            yield piece
        if len(pieces) < max_tokens:
            yield None  # end of sequence


def test_stream_stops_on_a_loop_and_exposes_the_cut():
    rt = Scripted(CULINARY)
    cfg = GenerationConfig(max_tokens=200, loop_stop=True)
    streamed = "".join(rt.stream("prompt", cfg))
    st = rt.last_stats
    assert st.finish_reason == "loop" and st.loop_cut is not None
    assert st.completion_tokens == rt.produced < len(words(CULINARY))  # generation really stopped
    assert st.trimmed(streamed).strip() == "Sure! I'm happy to help you with your culinary skills."
    assert rt.generate("prompt", cfg)[0] == "Sure! I'm happy to help you with your culinary skills."


def test_stream_without_loop_stop_is_unchanged():
    rt = Scripted(CULINARY)
    text, st = rt.generate("prompt", GenerationConfig(max_tokens=200))
    assert st.finish_reason == "stop" and st.loop_cut is None  # the script ran out: end of text
    assert text == CULINARY.strip()
    _, st = rt.generate("prompt", GenerationConfig(max_tokens=10))
    assert st.finish_reason == "length" and st.completion_tokens == 10


def test_stop_string_still_wins_and_is_held_back():
    rt = Scripted("Hello there. <|end|> ignored", stop=("<|end|>",))
    pieces = list(rt.stream("p", GenerationConfig(max_tokens=50, loop_stop=True)))
    assert "".join(pieces) == "Hello there. " and rt.last_stats.finish_reason == "stop"


def test_generation_config_rejects_a_bad_repeat_penalty():
    with pytest.raises(QuantError, match="repeat_penalty"):
        GenerationConfig(repeat_penalty=0)


@pytest.mark.mlx
def test_mlx_penalty_sees_generated_tokens_only_as_llama_cpp():
    """llama.cpp's sampler penalises the last 64 generated tokens, never the prompt; MLX must too,
    or the same repeat_penalty would answer differently on the two runtimes."""
    mx = pytest.importorskip("mlx.core")
    from quant.mlx_runtime import REPEAT_WINDOW, _penalty_on_generated

    prompt, generated = [1, 2, 3], [4, 4, 5]
    proc = _penalty_on_generated(2.0, len(prompt))
    out = proc(mx.array(prompt + generated), mx.full((1, 8), 4.0))
    assert out.tolist()[0] == [4.0, 4.0, 4.0, 4.0, 2.0, 2.0, 4.0, 4.0]
    out = proc(mx.array(prompt), mx.full((1, 8), -4.0))  # first answer token: nothing generated yet
    assert out.tolist()[0] == [-4.0] * 8
    many = list(range(8)) + [7] * REPEAT_WINDOW  # 0..6 fell out of the window
    out = proc(mx.array(prompt + many), mx.full((1, 8), 4.0))
    assert out.tolist()[0] == [4.0] * 7 + [2.0]


# --- the real default model ---------------------------------------------------------------

# Under the old chat decode (greedy, no penalty) the default model answers this with "The heat
# source is usually a heat source that is designed to heat the water." over and over until
# max_tokens (bench/results/sampling_bench.json); the chat's settings end it in ~70 tokens.
LOOPING_PROMPT = "How do I boil an egg?"


@pytest.mark.slow
def test_a_prompt_that_loops_under_the_old_decode_ends_with_the_chat_settings(llama_runtime):
    from assistant.config import Settings

    settings = Settings()
    prompt = llama_runtime.format_chat([{"role": "system", "content": settings.system_prompt},
                                        {"role": "user", "content": LOOPING_PROMPT}])
    old_text, old = llama_runtime.generate(prompt, GenerationConfig(max_tokens=settings.max_tokens))
    assert old.finish_reason == "length" and old.completion_tokens == settings.max_tokens
    assert feed(old_text).cut is not None, old_text  # it did loop

    new_text, new = llama_runtime.generate(prompt, settings.generation_config())
    assert new.finish_reason in ("stop", "loop"), new_text
    assert new.completion_tokens < settings.max_tokens
    sentences = [normalize_sentence(s) for s in re.split(r"(?<=[.!?])\s+|\n", new_text)]
    long = [s for s in sentences if len(s.split()) >= MIN_SENTENCE_WORDS]
    assert len(long) == len(set(long)), new_text  # no sentence kept twice


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_and_llama_cpp_answer_alike_with_the_chat_penalty(default_model, llama_runtime):
    """Measured on 6 prompts x 48 tokens at repeat_penalty 1.2: penalising generated tokens only
    (as llama.cpp does) gave common prefixes of 7-48 tokens, 3/6 answers identical; mlx-lm's own
    processor (prompt included) 2-14 tokens, 0/6 identical."""
    pytest.importorskip("mlx_lm")
    from assistant.config import Settings
    from quant.runtime import load_runtime

    mlx = load_runtime(default_model, "mlx", n_ctx=512)
    try:
        cfg = Settings(max_tokens=32).generation_config()
        prompt = llama_runtime.format_chat([{"role": "user", "content": "List five fruits."}])
        a, _ = llama_runtime.generate(prompt, cfg)
        b, _ = mlx.generate(prompt, cfg)
    finally:
        mlx.close()
    assert a == b and a.startswith("1. "), (a, b)
