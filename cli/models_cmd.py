"""`reverie models …`: the model registry."""
from __future__ import annotations

from pathlib import Path

import typer

from .common import emit_json, handle_errors, home, num, safe

models_app = typer.Typer(help="List, inspect and add local GGUF models; choose the default.",
                         no_args_is_help=True)

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")


def _fmt_size(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n else "-"


@models_app.command("list")
@handle_errors
def list_(json_out: bool = JsonOpt):
    """List known models (built-in and added) and which is the default."""
    from assistant.models_api import list_models

    models, default = list_models(home())
    if json_out:
        emit_json({"default": default, "models": [m.to_dict() for m in models]})
        return
    for m in models:
        mark = "*" if m.name == default else " "
        on_disk = bool(m.path) and Path(m.path).is_file()
        state = "" if on_disk else "  (made on first use)" if m.present else "  (missing)"
        typer.echo(f"{mark} {m.name:<18} {m.source:<8} {_fmt_size(m.size_bytes):>7}  {m.description or m.path}{state}")


@models_app.command()
@handle_errors
def info(name: str = typer.Argument(None, help="Model name (default model if omitted)."),
         json_out: bool = JsonOpt):
    """Show a model's file, architecture, quantization and size."""
    from assistant.models_api import model_info

    d = model_info(home(), name)
    if json_out:
        emit_json(d)
        return
    for k, v in d.items():
        typer.echo(f"{k:>14}: {num(v) if isinstance(v, (int, float)) else safe(v)}")


@models_app.command()
@handle_errors
def add(name: str = typer.Argument(..., help="A short name for the model."),
        path: Path = typer.Argument(..., help="Path to a local .gguf file."),
        description: str = typer.Option("", "--description", "-d", help="Free text shown in the list.")):
    """Register a local GGUF file under a name (the file is checked, not copied)."""
    from assistant.models_api import add_model

    m = add_model(home(), name, path, description)
    typer.echo(f"added {m.name}: {m.arch} {m.file_type} {_fmt_size(m.size_bytes)} at {m.path}")


@models_app.command()
@handle_errors
def default(name: str = typer.Argument(..., help="Model name to use by default.")):
    """Set the default model."""
    from assistant.models_api import set_default

    m = set_default(home(), name)
    typer.echo(f"default model is now {m.name}")


@models_app.command("rm")
@handle_errors
def rm(name: str = typer.Argument(..., help="A user-added model's name.")):
    """Forget a user-added model (its file is left alone)."""
    from assistant.models_api import remove_model

    remove_model(home(), name)
    typer.echo(f"removed {name}")
