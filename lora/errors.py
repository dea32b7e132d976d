"""Errors raised by lora/. Messages say what went wrong and how to fix it; the CLI prints them."""


class LoraError(ValueError):
    """Bad training input, config, adapter file or export: a user-facing error with a fix."""


class AdapterMismatch(LoraError):
    """An adapter directory does not fit the base model or is damaged; lists every problem."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"adapter {self.path} cannot be used ({len(self.problems)} problem(s)):\n  - {lines}\n"
            "Retrain it for this base model (`reverie sleep --strategy retrain`) or remove it "
            "(`reverie adapters rm`).")


class TrainingDiverged(LoraError):
    """Raised internally when sustained loss spikes or NaN make a run abort."""
