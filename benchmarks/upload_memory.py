"""Peak memory of the server under worst-case uploads, one at a time and concurrently.

    python benchmarks/upload_memory.py [--model PATH] [--clients 8] [--rounds 2]
                                       [--max-decodes 2] [--time-limit 120]

Starts ``fmnist serve`` on a free 127.0.0.1 port in a subprocess (the model: ``--model``,
else the newest run under ``runs/``) and reads the server process's peak RSS (VmHWM in
/proc/PID/status; reset between phases through /proc/PID/clear_refs where allowed). The
uploads are the worst the server accepts, each within the 10 MiB / 40 Mpx limits:

* ``rgba-6300.png``: 6300x6300 8-bit RGBA cut-out (39.7 Mpx, ~170 KB): the alpha step;
* ``rgba16-6300.png``: the same in 16-bit RGBA;
* ``gray16-6300.png``: 16-bit grayscale (Pillow mode I;16);
* ``palette-6300.png``: palette with a transparent entry (P + tRNS);
* ``bomb-20000.png``: a header claiming 20000x20000 pixels (must be 413, undecoded).

Phases: ``baseline`` (model loaded, warmed up), each upload alone, ``many
files`` (one request with 16 RGBA files), ``concurrent`` (``--clients`` threads, each
sending every upload ``--rounds`` times, in one request per upload). Bounded by count and
by ``--time-limit``. Writes ``benchmarks/results/upload-memory-cpu.json``; exit code 1
when a status was not the expected one or the peak passed the stated bound.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from _common import write_result
from load import start_server

SIDE = 6300
"""Side of the square worst-case uploads: 39.69 Mpx, just under MAX_IMAGE_PIXELS (40 M)."""
PER_DECODE_MB = 250
"""Stated cost of one decode slot at worst (decoded image <= 4 B/px x 40 Mpx = 160 MB, the
encoded bytes, a reduction band and the working-size analysis), measured in the tests."""
SLACK_MB = 150
"""Headroom on top for request parsing, thread stacks and the allocator's high-water marks."""


# --------------------------------------------------------------------------- uploads


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, *, depth: int, color: int, row: Callable[[int], bytes],
        extra: tuple[tuple[bytes, bytes], ...] = (), rows: int | None = None) -> bytes:
    """A PNG streamed row by row (``row(y) -> bytes`` without the filter byte): any size
    without a full-size array in this process. ``rows`` writes only that many rows (a
    header that claims more pixels than the data holds: a decompression bomb's shape)."""
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\x00" + row(y)) for y in range(min(height, rows or height)))
    idat += z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    body = b"".join(_chunk(k, v) for k, v in extra)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + body + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _item_rows(side: int, clear: bytes, item: bytes):
    """``row(y)``: a centred square of ``item`` pixels on ``clear`` pixels."""
    q = side // 4
    empty = clear * side
    inside = clear * q + item * (side - 2 * q) + clear * q
    return lambda y: inside if q <= y < side - q else empty


def worst_case_uploads(side: int = SIDE) -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected HTTP status)."""
    plte = bytes([200, 200, 200, 30, 40, 50])
    return {
        f"rgba-{side}.png": (png(side, side, depth=8, color=6, row=_item_rows(
            side, b"\xc8\xc8\xc8\x00", b"\x1e\x28\x32\xff")), 200),
        f"rgba16-{side}.png": (png(side, side, depth=16, color=6, row=_item_rows(
            side, b"\xc8\x00" * 3 + b"\x00\x00", b"\x1e\x00\x28\x00\x32\x00\xff\xff")), 200),
        f"gray16-{side}.png": (png(side, side, depth=16, color=0, row=_item_rows(
            side, b"\xc8\x00", b"\x1e\x00")), 200),
        f"palette-{side}.png": (png(side, side, depth=8, color=3, row=_item_rows(
            side, b"\x00", b"\x01"), extra=((b"PLTE", plte), (b"tRNS", b"\x00"))), 200),
        "bomb-20000.png": (png(20000, 20000, depth=8, color=0, row=lambda y: b"\x00" * 20000,
                               rows=1), 413),
    }


# --------------------------------------------------------------------------- measuring


def peak_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs "5"); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def post(client: httpx.Client, files: list[tuple[str, bytes]]) -> int:
    r = client.post("/api/predict", files=[("files", (n, d, "image/png")) for n, d in files])
    return r.status_code


def phase(pid: int, name: str, run) -> dict:
    """Run one phase; its peak RSS and the statuses it got."""
    reset = reset_peak(pid)
    t0 = time.perf_counter()
    statuses = run()
    rss, hwm = peak_mb(pid)
    print(f"  {name:<18} peak {hwm:7.0f} MB  (now {rss:5.0f} MB)  {len(statuses)} requests, "
          f"{time.perf_counter() - t0:5.1f} s", flush=True)
    return {"phase": name, "peak_rss_mb": round(hwm, 1), "rss_after_mb": round(rss, 1),
            "peak_reset": reset, "requests": len(statuses),
            "seconds": round(time.perf_counter() - t0, 2), "statuses": statuses}


def concurrent(url: str, uploads: dict, clients: int, rounds: int, deadline: float) -> list:
    """``clients`` threads, each posting every upload ``rounds`` times until the deadline."""
    got: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(rounds):
                for name, (data, want) in uploads.items():
                    if time.monotonic() > deadline:
                        return
                    status = post(c, [(name, data)])
                    with lock:
                        got.append((name, status, want))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="run folder, model.pt or model.onnx (default: newest run)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-decodes", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds (default 120)")
    args = ap.parse_args()
    if min(args.clients, args.rounds, args.max_decodes) < 1 or args.time_limit <= 0:
        ap.error("--clients, --rounds, --max-decodes and --time-limit must be positive")
    uploads = worst_case_uploads()
    rgba = next(iter(uploads.items()))
    proc, url = start_server(args.model, extra_args=("--max-decodes", str(args.max_decodes)))
    deadline = time.monotonic() + args.time_limit
    phases: list[dict] = []
    try:
        pid = proc.pid
        with httpx.Client(base_url=url, timeout=120) as c:
            card = c.get("/api/model").json()
            print(f"upload-memory: {url}  model {card.get('arch')}  max-decodes "
                  f"{args.max_decodes}", flush=True)
            rss0, _ = peak_mb(pid)
            phases.append({"phase": "baseline", "rss_mb": round(rss0, 1)})
            print(f"  {'baseline':<18} rss {rss0:7.0f} MB", flush=True)
            for n, (d, want) in uploads.items():
                phases.append(phase(pid, n, lambda n=n, d=d, want=want: [
                    (n, post(c, [(n, d)]), want)]))
            phases.append(phase(pid, "many files", lambda: [
                ("16 x " + rgba[0], post(c, [(f"{i}-{rgba[0]}", rgba[1][0]) for i in range(16)]),
                 200)]))
        phases.append(phase(pid, "concurrent", lambda: concurrent(
            url, uploads, args.clients, args.rounds, deadline)))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

    bound = rss0 + args.max_decodes * PER_DECODE_MB + SLACK_MB
    peak = max(p.get("peak_rss_mb", 0) for p in phases)
    wrong = [s for p in phases for s in p.get("statuses", []) if s[1] != s[2]]
    path = write_result("upload-memory", torch.device("cpu"), {
        "model": {k: card.get(k) for k in ("name", "arch", "backend", "device", "params")},
        "uploads": {n: {"bytes": len(d), "expected_status": w} for n, (d, w) in uploads.items()},
        "clients": args.clients, "rounds": args.rounds, "max_decodes": args.max_decodes,
        "time_limit_s": args.time_limit,
        "bound_mb": round(bound, 1),
        "bound_rule": f"baseline RSS + max_decodes x {PER_DECODE_MB} MB + {SLACK_MB} MB",
        "peak_rss_mb": peak, "within_bound": peak <= bound,
        "unexpected_statuses": wrong[:10],
        "phases": [{**p, "statuses": _summary(p.get("statuses"))} for p in phases],
    })
    print(f"peak {peak:.0f} MB, bound {bound:.0f} MB ({'within' if peak <= bound else 'OVER'})"
          f"; {len(wrong)} unexpected statuses; wrote {path}")
    return 0 if peak <= bound and not wrong else 1


def _summary(statuses: list | None) -> dict | None:
    """``{"name: status": count}`` of a phase's answers."""
    if statuses is None:
        return None
    out: dict[str, int] = {}
    for name, status, _ in statuses:
        out[f"{name}: {status}"] = out.get(f"{name}: {status}", 0) + 1
    return out


if __name__ == "__main__":
    raise SystemExit(main())
