"""`reverie quant …`: merge an adapter into the base, quantize, report the cost, convert to MLX."""
from __future__ import annotations

import time
from typing import Optional

import typer

from .common import emit_json, handle_errors, home

quant_app = typer.Typer(
    help="Merge adapters into the base model, quantize models and measure what it costs.",
    no_args_is_help=True)

TypeOpt = typer.Option("same", "--type", "-t",
                       help="Output type: Q4_K_M, Q8_0, Q4_1, F16 (also Q4_0, Q5_K_M, Q6_K, F32), "
                            "or 'same' as the base.")


def _progress(quiet: bool):
    t0 = time.perf_counter()
    last = [""]

    def report(msg: str) -> None:
        if quiet or msg == last[0]:
            return
        last[0] = msg
        typer.secho(f"[{time.perf_counter() - t0:6.1f}s] {msg}", dim=True, err=True)

    return report


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@quant_app.command("merge")
@handle_errors
def merge_cmd(
    adapter: str = typer.Option(..., "--adapter", "-a",
                                help="Adapter to bake in: a GGUF LoRA file (or an adapter version "
                                     "once adapters are registered)."),
    qtype: str = TypeOpt,
    name: Optional[str] = typer.Option(None, "--name", "-n",
                                       help="Register the merged model under this name "
                                            "(default: BASE-ADAPTER-TYPE)."),
    base: Optional[str] = typer.Option(None, "--base", "-m",
                                       help="Base model name or .gguf path (default: the default model)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
):
    """Bake a LoRA adapter into the base model, quantize it, and register the result.

    A merged model serves without the runtime-LoRA cost (no extra matmuls, mmap stays on).
    """
    from assistant.quant_api import merge_adapter

    r = merge_adapter(adapter, qtype, name=name, base=base, home=home(), progress=_progress(quiet))
    if json_out:
        emit_json(r)
        return
    typer.echo(f"merged {r['merged_tensors']} tensors into {r['base_name']} -> model "
               f"{r['name']!r} ({r['type']}, {_mb(r['size_bytes'])}, {r['seconds']:.1f}s)")
    typer.echo(f"  file: {r['path']}")
    typer.echo(f"  use it: reverie chat --model {r['name']}")


@quant_app.command("quantize")
@handle_errors
def quantize_cmd(
    src: str = typer.Argument(..., help="Model name, .gguf file (F16/F32 best) or a Hugging Face "
                                        "safetensors directory of a llama-family model."),
    qtype: str = typer.Option(..., "--type", "-t",
                              help="Q4_K_M, Q8_0, Q4_1, F16 (also Q4_0, Q5_K_M, Q6_K, F32)."),
    out: Optional[str] = typer.Option(None, "--out", "-o",
                                      help="Output .gguf path (default: next to the source, or "
                                           "the data dir's models/ for built-in models)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Also register the result under this name."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
):
    """Quantize a model to a GGUF type with llama.cpp's own quantizer."""
    from assistant.quant_api import quantize_model

    r = quantize_model(src, qtype, out=out, name=name, home=home(), progress=_progress(quiet))
    if json_out:
        emit_json(r)
        return
    typer.echo(f"{r['source']} ({r['source_type']}) -> {r['path']} ({r['type']}, "
               f"{_mb(r['size_bytes'])}, {r['seconds']:.1f}s)")
    for note in r.get("notes", []):
        typer.echo(f"  note: {note}")
    if r.get("name"):
        typer.echo(f"  registered as {r['name']!r}")


@quant_app.command("report")
@handle_errors
def report_cmd(
    model: Optional[str] = typer.Argument(None, help="Model name or .gguf path (default: the default model)."),
    against: Optional[str] = typer.Option(None, "--against", "-r",
                                          help="Reference model (e.g. the F16 or unmerged model) for "
                                               "KL divergence and top-1 agreement."),
    tokens: int = typer.Option(64, "--tokens", min=8, help="Tokens to decode when timing speed."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
):
    """File size, perplexity on held-out text, KL vs a reference, decode tokens/s."""
    from assistant.quant_api import quality_report

    r = quality_report(model, against, home=home(), decode_tokens=tokens,
                       progress=_progress(quiet or json_out))
    if json_out:
        emit_json(r)
        return
    typer.echo(f"{r['name']}  ({r['file_type']}, {_mb(r['size_bytes'])})")
    typer.echo(f"  perplexity     {r['perplexity']:.3f}  ({r['tokens_scored']} held-out tokens)")
    typer.echo(f"  decode         {r['decode_tokens_per_s']:.1f} tokens/s")
    if r.get("reference"):
        typer.echo(f"  KL vs ref      {r['kl_mean']:.5f} nats/token (max {r['kl_max']:.4f})")
        typer.echo(f"  top-1 agree    {100 * r['top1_agreement']:.1f}%  (ref: {r['reference']})")


@quant_app.command("to-mlx")
@handle_errors
def to_mlx_cmd(
    model: Optional[str] = typer.Argument(None, help="Model name or .gguf path (default: the default model)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (default: models/NAME-mlx in the data dir)."),
    bits: int = typer.Option(8, "--bits", help="Bits for tensors MLX cannot hold exactly (K-quants): 4 or 8."),
    name: Optional[str] = typer.Option(None, "--name", "-n",
                                       help="Register the result under this name (default: MODEL-mlx)."),
    no_register: bool = typer.Option(False, "--no-register", help="Only write the directory."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on stderr."),
):
    """Write an MLX-quantized copy of a GGUF model that the MLX runtime loads, and register it."""
    from assistant.quant_api import to_mlx

    r = to_mlx(model, out=out, bits=bits, name=name, register=not no_register, home=home(),
               progress=_progress(quiet))
    if json_out:
        emit_json(r)
        return
    typer.echo(f"{r['source']} -> {r['path']} (MLX, requantized tensors at {r['requant_bits']} bits)")
    if r.get("registered_as"):
        typer.echo(f"  use it: reverie chat --model {r['registered_as']} (served by MLX)")
