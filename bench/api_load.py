"""Benchmark of the HTTP service: requests/s, p50 and p95 per read route, at 1 and 16 concurrent.

    python -m bench.api_load [--lake DIR] [--requests 2000] [--concurrency 1 16]

Without `--lake` it loads the bundled sample into a fresh lake first. The service runs as users
run it: `uvicorn app.main:app` in its own process on a loopback port; the load comes from this
process (asyncio and aiohttp, keep-alive connections), so both share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lake_env(lake: Path) -> dict[str, str]:
    """This process's environment for a command over `lake`: its data directory, nothing inherited
    that names another lake or metadata database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_DIR", "STORAGE_PATH", "METADATA_DB"))}
    env.update(DATA_DIR=str(lake), LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    return env


@contextmanager
def service(lake: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """`uvicorn app.main:app` over `lake` on a free loopback port until the block ends; its base URL."""
    port = free_port()
    env = {**lake_env(lake), **(extra_env or {})}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--no-access-log", "--log-level", "warning"]
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"the service did not start:\n{log.read()[-4000:]}") from None
                    time.sleep(0.2)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            if server.returncode not in (0, -15):
                log.seek(0)
                raise RuntimeError(f"the service ended with {server.returncode}:\n{log.read()[-4000:]}")


@dataclass(frozen=True)
class Answer:
    path: str
    status: int
    body: bytes
    seconds: float


async def _fire(base: str, paths: Sequence[str], concurrency: int) -> list[Answer]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    answers: list[Answer] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                clock = time.perf_counter()
                try:
                    async with client.get(path) as response:
                        body = await response.read()
                except aiohttp.ClientError as error:  # the connection failed: an answer of status 0
                    answers.append(Answer(path, 0, repr(error).encode(), time.perf_counter() - clock))
                    continue
                answers.append(Answer(path, response.status, body, time.perf_counter() - clock))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def fire(base: str, paths: Sequence[str], concurrency: int) -> tuple[list[Answer], float]:
    """GET every path, `concurrency` at a time over keep-alive connections; the answers and the wall time."""
    clock = time.perf_counter()
    answers = asyncio.run(_fire(base, paths, concurrency))
    return answers, time.perf_counter() - clock


def read_paths(meter: str, month: tuple[str, str], hours: tuple[str, str], batch_id: str) -> dict[str, str]:
    """One path per read route."""
    return {
        "/meters/{id}/daily": f"/meters/{meter}/daily?start={month[0]}&end={month[1]}",
        "/portfolio/hourly": f"/portfolio/hourly?start={hours[0]}&end={hours[1]}&limit=48",
        "/quarantine": f"/quarantine?batch_id={batch_id}&limit=50",
        "/quality": f"/quality?batch_id={batch_id}",
        "/batches/{id}": f"/batches/{batch_id}",
        "/batches": "/batches?limit=20",
        "/runs": "/runs?limit=20",
        "/health": "/health",
        "/metrics": "/metrics",
    }


def _sample_lake(work: Path) -> tuple[Path, str]:
    lake = work / "lake"
    subprocess.run(
        [sys.executable, "-m", "app.cli", "run-batch"],
        env=lake_env(lake),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return lake, "MTR-0001"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="an existing lake (default: the bundled sample, loaded first)")
    parser.add_argument("--meter", default="MTR-0001", help="the meter of /meters/{id}/daily")
    parser.add_argument("--requests", type=int, default=2000, help="requests per route and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        lake, meter = (args.lake, args.meter) if args.lake else _sample_lake(Path(work))
        with service(lake) as base:
            with urllib.request.urlopen(f"{base}/batches?limit=1") as response:
                batch_id = json.load(response)[0]["batch_id"]
            month, hours = ("2025-03-01", "2025-03-31"), ("2025-03-10T00:00:00Z", "2025-03-12T00:00:00Z")
            routes = read_paths(meter, month, hours, batch_id)
            fire(base, list(routes.values()) * 20, 4)  # warm-up: snapshots loaded, connections pooled
            header = ("route", "concurrent", "requests", "req/s", "p50 ms", "p95 ms", "errors")
            print("{:<22} {:>10} {:>9} {:>8} {:>8} {:>8} {:>7}".format(*header))
            for name, path in routes.items():
                for concurrency in args.concurrency:
                    answers, wall = fire(base, [path] * args.requests, concurrency)
                    times = sorted(a.seconds * 1000 for a in answers)
                    errors = sum(a.status >= 400 for a in answers)
                    p95 = times[max(0, int(len(times) * 0.95) - 1)]
                    print(
                        f"{name:<22} {concurrency:>10} {len(answers):>9} {len(answers) / wall:>8.0f} "
                        f"{statistics.median(times):>8.1f} {p95:>8.1f} {errors:>7}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
