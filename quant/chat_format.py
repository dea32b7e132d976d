"""Turning a list of chat messages into the prompt text a model was trained on.

Owns: ChatML (SmolLM2 and most llama-family instruct models), Gemma's turn format, and rendering a
GGUF's own `tokenizer.chat_template` (Jinja) for other files. Both runtimes use this module, so
they see byte-identical prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True)
class ChatFormat:
    name: str
    stop: tuple[str, ...]
    assistant_prefix: str

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError


class ChatML(ChatFormat):
    def render(self, messages, add_generation_prompt=True):
        out = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        if add_generation_prompt:
            out.append(self.assistant_prefix)
        return "".join(out)


class Gemma(ChatFormat):
    def render(self, messages, add_generation_prompt=True):
        # Gemma has no system role: the system text is prepended to the first user turn.
        out, system = [], ""
        for m in messages:
            if m["role"] == "system":
                system = m["content"] + "\n\n"
                continue
            role = "model" if m["role"] == "assistant" else "user"
            content = (system + m["content"]) if role == "user" and system else m["content"]
            if role == "user":
                system = ""
            out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
        if add_generation_prompt:
            out.append(self.assistant_prefix)
        return "".join(out)


class Jinja(ChatFormat):
    template: str = ""

    def __init__(self, template: str, eos: str = ""):
        object.__setattr__(self, "name", "gguf-template")
        object.__setattr__(self, "stop", (eos,) if eos else ())
        object.__setattr__(self, "assistant_prefix", "")
        object.__setattr__(self, "template", template)

    def render(self, messages, add_generation_prompt=True):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token="", eos_token=self.stop[0] if self.stop else "")


CHATML = ChatML("chatml", ("<|im_end|>", "<|im_start|>"), "<|im_start|>assistant\n")
GEMMA = Gemma("gemma", ("<end_of_turn>", "<start_of_turn>"), "<start_of_turn>model\n")


def pick(chat_format: str, arch: str, template: str = "") -> ChatFormat:
    """The registry's choice wins; then the architecture; then the file's own template."""
    if chat_format == "chatml":
        return CHATML
    if chat_format == "gemma" or arch.startswith("gemma"):
        return GEMMA
    if template and "im_start" not in template:
        return Jinja(template)
    return CHATML
