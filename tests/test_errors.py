"""One list of user-facing error types (assistant.errors.domain_errors): the CLI and the API
server convert the same ones."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from assistant.errors import ReverieError, domain_errors
from cli.common import handle_errors
from lora.errors import LoraError
from lora.metrics import MetricsError
from memory.errors import MemoryStoreError
from memory.ledger import LedgerError
from quant.errors import QuantError


def test_every_librarys_error_is_in_the_one_list():
    assert set(domain_errors()) == {ReverieError, QuantError, LedgerError, MemoryStoreError,
                                    LoraError, MetricsError}


def test_the_cli_prints_each_as_a_message_and_exits_1():
    for err in domain_errors():
        app = typer.Typer()

        @app.command()
        @handle_errors
        def boom():
            raise err("what went wrong; how to fix it")

        r = CliRunner().invoke(app, [])
        assert r.exit_code == 1, (err, r.output)
        assert "error: what went wrong; how to fix it" in r.output and "Traceback" not in r.output


def test_the_api_worker_converts_the_same_list():
    from assistant.api import worker

    assert worker.domain_errors is domain_errors
