"""`reverie serve`: the assistant behind an OpenAI-compatible HTTP API.

The package: schema.py (the wire format), worker.py (the one model thread and its queue),
feedback.py (rating an answer), app.py (routes, key, errors, streaming). This facade checks
where the server may listen, binds, and runs uvicorn until Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import ipaddress
import signal
import socket
from pathlib import Path

from ..errors import ReverieError

DEFAULT_PORT = 8411


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def check_bind(host: str, api_key: str | None) -> None:
    """Loopback by default; anywhere else only behind a key (a personal memory is on the line)."""
    if api_key is not None and not api_key.strip():
        raise ReverieError("--api-key is empty; pass a secret, e.g. --api-key \"$(openssl rand -hex 16)\".")
    if not is_loopback(host) and not api_key:
        raise ReverieError(
            f"refusing to listen on {host}: other machines could read and change your memories. "
            "Add --api-key KEY (clients then send `Authorization: Bearer KEY`), or leave --host "
            "at 127.0.0.1.")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ReverieError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another "
                           "--port, or stop what is using it.") from None
    sock.set_inheritable(True)
    return sock


def serve(home: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_key: str | None = None,
          model: str | None = None, backend: str = "auto", threads: int | None = None,
          on_ready=None) -> None:
    """Serve until Ctrl-C / SIGTERM. on_ready(url) is called once the model is loaded."""
    check_bind(host, api_key)
    import uvicorn

    from .app import create_app
    from .worker import ModelWorker

    worker = ModelWorker(home, model, backend, threads)  # an unknown --model fails here
    sock = _bind(host, port)
    app = create_app(worker, api_key)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # Ctrl-C / SIGTERM: end the answers in flight now, so connections close within the
            # graceful-shutdown window instead of being cut off after it.
            worker.stop_all()
            super().handle_exit(sig, frame)

    server = Server(config)
    if on_ready:
        real_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        _startup = server.startup

        async def startup(sockets=None):
            await _startup(sockets=sockets)
            on_ready(f"http://{shown}:{real_port}/v1", worker)

        server.startup = startup
    # uvicorn shuts down gracefully on Ctrl-C / SIGTERM, then raises the signal again for the
    # handler that was there before: make that a no-op, so a clean stop exits 0.
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not server.started:
        raise ReverieError("the server did not start; see the messages above.")


__all__ = ["serve", "check_bind", "is_loopback", "DEFAULT_PORT"]
