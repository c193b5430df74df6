"""Load test of the REST API: requests/s, latency p50/p99 and errors under concurrency.

    python benchmarks/load.py [--url URL | --model PATH] [--requests 500] [--concurrency 8]
                              [--time-limit 60] [--files-per-request 1]

Bounded and local: the URL must be on the loopback interface; without ``--url`` the script
starts its own ``fmnist serve`` on a free 127.0.0.1 port (the model: ``--model``, else the
newest run under ``runs/``) and stops it at the end. ``--concurrency`` threads, each with its
own ``httpx.Client``, send ``POST /api/predict`` with one test image as a PNG (the real
Fashion-MNIST test split when found, else a synthetic item) until ``--requests`` are done
or ``--time-limit`` seconds have passed. Writes ``benchmarks/results/load-<device>.json``
(device: the server's, from ``/api/model``) and prints a table. Exit code 1 when any
request failed.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import torch
from _common import write_result
from PIL import Image

from fmnist.errors import FmnistError


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str | None, timeout: float = 120.0,
                 extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """``fmnist serve`` on a free loopback port; returns (process, base URL) once healthy.
    The process is the server itself (uvicorn runs in it): its pid is the one to measure."""
    port = free_port()
    cmd = [sys.executable, "-m", "fmnist", "serve", "--host", "127.0.0.1", "--port", str(port),
           *extra_args]
    cmd += [model] if model else []
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"load: the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit(f"load: the server did not answer within {timeout:g} s")


def sample_png() -> tuple[bytes, str]:
    """One test image as PNG bytes, and where it came from."""
    try:
        from fmnist.datasets import load_dataset

        ds = load_dataset("fashion-mnist", offline=True, verify=False)
        image, source = ds.test.images[0], "fashion-mnist test image 0"
    except FmnistError:
        image = np.zeros((28, 28), np.uint8)
        image[4:24, 8:20] = 220
        source = "synthetic 28x28 item"
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue(), source


def run_load(url: str, payload: bytes, *, requests: int, concurrency: int, time_limit: float,
             files_per_request: int) -> dict:
    """Send the requests from ``concurrency`` threads; latencies and errors."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_limit
    files = [("files", (f"item-{i}.png", payload, "image/png")) for i in range(files_per_request)]

    def worker() -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() >= deadline:
                        return
                    issued += 1
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/predict", files=files)
                    ok = r.status_code == 200 and all(x["error"] is None for x in r.json())
                    problem = None if ok else f"HTTP {r.status_code}: {r.text[:200]}"
                except (httpx.HTTPError, ValueError) as e:
                    problem = f"{type(e).__name__}: {e}"
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    (errors.append(problem) if problem else latencies.append(ms))

    with httpx.Client(base_url=url, timeout=30) as warm:  # load the model's kernels first
        warm.post("/api/predict", files=files).raise_for_status()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    done = len(latencies) + len(errors)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
    return {
        "requests_planned": requests,
        "requests_done": done,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:5],
        "stopped_by_time_limit": done < requests,
        "seconds": round(seconds, 3),
        "requests_per_s": round(done / seconds, 2) if seconds else None,
        "images_per_s": round(len(latencies) * files_per_request / seconds, 2) if seconds else None,
        "latency_ms": {
            "p50": round(statistics.median(latencies), 3) if latencies else None,
            "p99": round(q[98], 3) if q else (round(latencies[0], 3) if latencies else None),
            "mean": round(statistics.fmean(latencies), 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--url", help="a running server on the loopback interface")
    where.add_argument("--model", help="run folder, model.pt or model.onnx to serve "
                       "(default: the newest run under runs/)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    ap.add_argument("--files-per-request", type=int, default=1)
    args = ap.parse_args()
    if min(args.requests, args.concurrency, args.files_per_request) < 1 or args.time_limit <= 0:
        ap.error("--requests, --concurrency, --files-per-request and --time-limit must be "
                 "positive")
    if args.url and not is_loopback(args.url):
        ap.error(f"--url {args.url}: only loopback addresses (127.0.0.1, ::1, localhost) are "
                 "load-tested")

    proc = None
    url = (args.url or "").rstrip("/")
    if not url:
        proc, url = start_server(args.model)
    try:
        card = httpx.get(url + "/api/model", timeout=10).json()
        payload, source = sample_png()
        print(f"load: {url}  model {card.get('arch')} ({card.get('backend')} on "
              f"{card.get('device')})  {args.requests} requests x {args.files_per_request} "
              f"file(s), {args.concurrency} clients, limit {args.time_limit:g} s", flush=True)
        result = run_load(url, payload, requests=args.requests, concurrency=args.concurrency,
                          time_limit=args.time_limit, files_per_request=args.files_per_request)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    device = torch.device(str(card.get("device") or "cpu").split(":")[0])
    path = write_result("load", device, {
        "url": url if args.url else "127.0.0.1 (own server)",
        "server_started_by_script": proc is not None,
        "model": {k: card.get(k) for k in ("name", "arch", "backend", "device", "params")},
        "image": source,
        "concurrency": args.concurrency,
        "files_per_request": args.files_per_request,
        "time_limit_s": args.time_limit,
        "client_cpus": os.cpu_count(),
        **result,
    })
    lat = result["latency_ms"]
    rows = [("requests", f"{result['requests_done']} of {result['requests_planned']}"),
            ("errors", str(result["errors"])),
            ("requests/s", f"{result['requests_per_s']}"),
            ("images/s", f"{result['images_per_s']}"),
            ("p50 latency", f"{lat['p50']} ms"),
            ("p99 latency", f"{lat['p99']} ms"),
            ("max latency", f"{lat['max']} ms"),
            ("seconds", f"{result['seconds']}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if result["stopped_by_time_limit"]:
        print(f"load: stopped by the {args.time_limit:g} s time limit")
    print(f"wrote {path}")
    for problem in result["error_samples"]:
        print(f"load: error: {problem}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
