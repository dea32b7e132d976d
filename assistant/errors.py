"""The one exception type the CLI turns into a clean message and exit code 1, and the one list of
every library's user-facing exception types (`domain_errors`) that the CLI and the API server
both convert."""


class ReverieError(Exception):
    """A user-facing error; the message says what went wrong and how to fix it."""


# (module, class) of each library's user-facing errors; memory.errors.MemoryStoreError is a
# LedgerError, lora.metrics.MetricsError a bad metric input (lora.errors.LoraError does not cover it)
_DOMAIN = (("quant.errors", "QuantError"), ("memory.ledger", "LedgerError"),
           ("memory.errors", "MemoryStoreError"), ("lora.errors", "LoraError"),
           ("lora.metrics", "MetricsError"))


def domain_errors() -> tuple[type[BaseException], ...]:
    """Every library's user-facing exception type: what the CLI prints as `error: <message>` and
    the API server answers as an error. Imported when asked (the layers below are not loaded just
    to define ReverieError); a package that cannot be imported has nothing to raise."""
    errs: list[type[BaseException]] = [ReverieError]
    for mod, name in _DOMAIN:
        try:
            m = __import__(mod, fromlist=[name])
        except ImportError:
            continue
        if hasattr(m, name):
            errs.append(getattr(m, name))
    return tuple(errs)
