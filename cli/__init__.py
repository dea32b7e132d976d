"""reverie cli package."""
from common.threads import passive_openmp as _passive_openmp

_passive_openmp()  # before torch or llama_cpp is imported (why: common/threads.py)

import os as _os  # noqa: E402

# pydantic looks for plugins (an entry-point scan of every installed package, ~25 ms of CPU) the
# first time chromadb's models are built; reverie uses none. A user who set it keeps theirs.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
