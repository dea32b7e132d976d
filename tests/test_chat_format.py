from quant.chat_format import CHATML, GEMMA, pick


def test_chatml_render():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert CHATML.render(msgs) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n")


def test_gemma_folds_system_into_first_user_turn():
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
    assert GEMMA.render(msgs) == (
        "<start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
        "<start_of_turn>user\nV<end_of_turn>\n<start_of_turn>model\n")


def test_pick():
    assert pick("", "gemma3") is GEMMA
    assert pick("chatml", "gemma3") is CHATML
    assert pick("", "llama", "{{ '<|im_start|>' }}") is CHATML
    custom = pick("", "llama", "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    assert custom.render([{"role": "user", "content": "hi"}]) == "[user]hi"
