"""``fmnist serve``: the web app and REST API for a model, with uvicorn."""

from __future__ import annotations

import argparse
import math
import socket
import sys

from ..errors import FmnistError
from .options import add_shared


def register_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="web app and REST API for a model",
        description="Serve the page (upload, gallery, model card) and the REST API "
        "(POST /api/predict, POST /api/similar, GET /api/model, GET /api/gallery, GET /healthz; "
        "docs at /docs) "
        "with uvicorn. The model loads once, at start. Needs the serve extra: "
        "pip install 'fmnist[serve]'.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="run folder, model.pt or model.onnx (default: the newest run under "
                   "runs/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_shared(p, "--backend", "--device", "--top-k", "--tta")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest file accepted, in MiB (default 10)")
    p.add_argument("--max-files", type=int, default=16,
                   help="most files per request (default 16)")
    p.add_argument("--max-decodes", type=int, default=2,
                   help="uploads decoded at once, server-wide; the rest wait their turn "
                   "(default 2; bounds memory: at most ~250 MB each)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import check_model_path, create_app, find_latest_run
    except ImportError as e:
        raise FmnistError(f"`fmnist serve` needs the serve extra ({e.name} is missing): "
                          "pip install 'fmnist[serve]'.") from None
    from ..inference import Predictor

    _check_serve_args(args)
    model = check_model_path(args.model or find_latest_run("runs"), args.backend)
    # load (and so check) the model before saying anything: a bad file is one line, exit 2
    predictor = Predictor.from_path(model, backend=args.backend, device=args.device,
                                    top_k=args.top_k, tta=args.tta)
    _check_port_free(args.host, args.port)
    app = create_app(model, backend=args.backend, device=args.device, top_k=args.top_k,
                     tta=args.tta,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                     max_files=args.max_files, max_decodes=args.max_decodes,
                     predictor=predictor)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/"
    print(f"fmnist: serving {model} at {url}  (API docs: {url}docs; Ctrl+C to stop)",
          flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port,
                    log_level="info" if args.verbose else "warning")
    except SystemExit as e:  # uvicorn exits when the app fails to start (e.g. port taken)
        if e.code:
            print("fmnist: error: the server did not start (see the log above)",
                  file=sys.stderr)
            return 2
    return 0


def _check_serve_args(args: argparse.Namespace) -> None:
    """Every serve flag in range, one line naming the flag otherwise (before any loading)."""
    if not 1 <= args.port <= 65535:
        raise FmnistError(f"--port {args.port} is out of range; pass a port from 1 to 65535 "
                          "(e.g. --port 8000).")
    if not (math.isfinite(args.max_upload_mb) and 0 < args.max_upload_mb <= 1024):
        raise FmnistError(f"--max-upload-mb {args.max_upload_mb} is out of range; pass a size "
                          "in MiB above 0 and at most 1024 (default 10).")
    for flag, value in (("--max-files", args.max_files), ("--top-k", args.top_k),
                        ("--max-decodes", args.max_decodes)):
        if value < 1:
            raise FmnistError(f"{flag} {value} is out of range; pass at least 1.")


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise FmnistError(f"cannot listen on {host}:{port} ({e.strerror}); "
                              "pass another --port or --host.") from None
