"""Upload benchmark: large streamed uploads to the real product, their memory and their speed.

Starts `tenantry dev` (local-disk storage, fresh data directory, free loopback port), uploads
generated text files through POST /api/v1/files with a client that streams them from disk,
checks what was stored, samples the API process's RSS meanwhile, and compares the upload's MB/s
with copying the same file on the same filesystem. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (
    HOST,
    REQUEST_TIMEOUT_S,
    RESULTS_DIR,
    BenchError,
    CpuMeter,
    background_load,
    bench_main,
    cell,
    describe_machine,
    free_port,
    product_environment,
    ratio,
    running,
    tenantry,
    until,
    wait_ready,
)

from tenantry.domain.files import SNIFF_BYTES, TEXT, sniff

MIB = 1024 * 1024
GIB = 1024 * MIB
MB = 1_000_000  # throughput is in decimal MB/s, as disk tools print it
# The read/write baseline's chunk: LocalDiskStorage's own read chunk (it writes in blocks of
# WRITE_BLOCK, 1 MiB).
COPY_CHUNK = 256 * 1024
CLIENT_CHUNK = MIB
GENERATE_CHUNK = MIB
WARM_UP_BYTES = MIB
RSS_SAMPLE_S = 0.05
RSS_TARGET_MIB = 64
# The product's size limit is at least this, and always twice the largest file.
MIN_UPLOAD_LIMIT = 4 * GIB
# Room left on the temporary filesystem for PostgreSQL, Redis and logs beside the files.
DISK_MARGIN = GIB
FILENAME = "big.txt"
PASSWORD = "correct horse battery 9"
TENANT = {
    "name": "Bench",
    "slug": "bench",
    "owner": {"username": "bench", "email": "bench@bench.example", "password": PASSWORD},
}
LOGIN = {"tenant": "bench", "login": "bench@bench.example", "password": PASSWORD}
OPERATIONS = {
    "upload": "upload, POST /api/v1/files",
    "copyfile": "shutil.copyfile",
    "chunked_copy": f"read/write loop, {COPY_CHUNK // 1024} KiB",
}
NOTES = [
    "MB/s is 10^6 bytes of file content per second of wall time; the multipart envelope adds "
    "about 200 bytes per upload.",
    "Caches are warm: each file was written just before, so every read (the client's and both "
    "copies') likely comes from the page cache. Writes land in the page cache too: neither the "
    "API's local storage nor the copies fsync. `sync` runs, untimed, before each timed step so "
    "that one step's writeback is not charged to the next.",
    "Each round is an upload, then shutil.copyfile, then the read/write loop; the figures are "
    "the median of the rounds, with the slowest and fastest. Writing into the page cache can "
    "vary tenfold between runs (in a VM, memory the host has not backed yet is slow to fill): "
    "copyfile, right after the upload, writes into memory nothing freed lately, while the loop "
    "after it reuses the pages of the copy just deleted.",
    "The client, the API and the copies share the machine's CPUs; CPU busy % is the whole "
    "machine's. API CPU s is the API process's own user and system time during the upload "
    "(medians); system time includes the kernel's page-cache writes.",
    "shutil.copyfile copies in the kernel (sendfile on Linux). The 256 KiB read/write loop in "
    "Python is closer to what the API does, minus HTTP, multipart parsing, SHA-256 and its "
    "thread hops.",
    "RSS is the `tenantry dev` process only (the API), sampled every 50 ms from before a size's "
    "first upload to after its last; the embedded PostgreSQL and Redis are separate processes "
    "and are not counted. Client RSS is this process's, which also runs the copies.",
]


@dataclass(frozen=True)
class Generated:
    path: Path
    size: int
    sha256: str
    seconds: float


@dataclass
class Rss:
    """Resident set size of one process around a block: before it, its peak and after it."""

    before: int
    peak: int
    after: int = 0
    samples: int = 0

    def summary(self) -> dict[str, float | int]:
        return {
            "before_mib": round(self.before / MIB, 1),
            "peak_mib": round(self.peak / MIB, 1),
            "after_mib": round(self.after / MIB, 1),
            "growth_mib": round((self.peak - self.before) / MIB, 1),
            "samples": self.samples,
        }


@contextlib.contextmanager
def watching_rss(process: psutil.Process) -> Iterator[Rss]:
    """Samples ``process``'s RSS every RSS_SAMPLE_S in a thread while the block runs."""
    start = process.memory_info().rss
    rss = Rss(before=start, peak=start)
    stop = threading.Event()

    def sample() -> None:
        # A process that died mid-upload shows up as the upload's error; nothing to sample.
        with contextlib.suppress(psutil.NoSuchProcess):
            while not stop.wait(RSS_SAMPLE_S):
                rss.peak = max(rss.peak, process.memory_info().rss)
                rss.samples += 1

    sampler = threading.Thread(target=sample, name="rss", daemon=True)
    sampler.start()
    try:
        yield rss
    finally:
        stop.set()
        sampler.join()
        with contextlib.suppress(psutil.NoSuchProcess):
            rss.after = process.memory_info().rss
            rss.peak = max(rss.peak, rss.after)


# ---------------------------------------------------------------------------------------------
# The files


def text_block() -> bytes:
    """A chunk's worth of ASCII lines: no NUL and valid UTF-8, so the API sniffs text/plain."""
    line = "{:09d} the quick brown fox jumps over the lazy dog: tenantry upload benchmark\n"
    lines = (line.format(n) for n in range(GENERATE_CHUNK // len(line.format(0)) + 1))
    return "".join(lines).encode("ascii")


def generate(path: Path, size: int, timeout_s: float) -> Generated:
    """Write ``size`` bytes of text chunk by chunk (never all in memory), hashing as it goes.

    Each chunk starts with its own number so the file does not repeat one block."""
    block = text_block()
    digest = hashlib.sha256()
    written = 0
    head = b""
    started = time.monotonic()
    with path.open("wb") as target:
        for index in until(started + timeout_s):
            if written == size:
                break
            chunk = (f"chunk {index:010d}\n".encode("ascii") + block)[
                : min(GENERATE_CHUNK, size - written)
            ]
            head = head or chunk[:SNIFF_BYTES]
            target.write(chunk)
            digest.update(chunk)
            written += len(chunk)
        else:
            raise BenchError(f"writing {path.name} took over {timeout_s:g} s")
    if (kind := sniff(head)) != TEXT:
        raise BenchError(f"{path.name} sniffs as {kind}, not {TEXT}")
    return Generated(path, size, digest.hexdigest(), time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# The upload


def multipart_body(
    source: Generated, boundary: str, timeout_s: float
) -> tuple[Iterator[bytes], int]:
    """A multipart/form-data body with one ``file`` field read from disk as it is sent, and its
    length: the envelope is built by hand so nothing holds the file in memory."""
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{FILENAME}"\r\n'
        f"Content-Type: {TEXT}\r\n\r\n"
    ).encode("ascii")
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    def chunks() -> Iterator[bytes]:
        yield head
        with source.path.open("rb") as file:
            for _ in until(time.monotonic() + timeout_s):
                if not (chunk := file.read(CLIENT_CHUNK)):
                    break
                yield chunk
            else:
                raise BenchError(f"uploading {source.path.name} took over {timeout_s:g} s")
        yield tail

    return chunks(), len(head) + source.size + len(tail)


def post_file(client: httpx.Client, source: Generated, timeout_s: float) -> httpx.Response:
    boundary = secrets.token_hex(16)
    body, length = multipart_body(source, boundary, timeout_s)
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(length),  # so httpx sends the body as is, not chunked
    }
    return client.post("/api/v1/files", content=body, headers=headers)


def stored_problems(response: httpx.Response, source: Generated, files_dir: Path) -> list[str]:
    """What is wrong with an upload's answer and stored object; empty when all is as sent."""
    if response.status_code != 201:
        return [f"HTTP {response.status_code}: {response.text[:500]}"]
    body = response.json()
    problems = [
        f"{name} is {body.get(name)!r}, expected {expected!r}"
        for name, expected in (
            ("size", source.size),
            ("sha256", source.sha256),
            ("content_type", TEXT),
        )
        if body.get(name) != expected
    ]
    # Object keys are tenants/<tenant id>/files/<file id>.
    stored = list(files_dir.glob(f"tenants/*/files/{body.get('id')}"))
    if len(stored) != 1:
        problems.append(f"{len(stored)} objects for file {body.get('id')} under {files_dir}")
    elif (on_disk := stored[0].stat().st_size) != source.size:
        problems.append(f"the stored object has {on_disk} bytes, expected {source.size}")
    return problems


def measure_upload(
    client: httpx.Client, api: psutil.Process, source: Generated, files_dir: Path, timeout_s: float
) -> dict[str, Any]:
    """One upload, timed, with the API process's CPU time."""
    os.sync()
    response: httpx.Response | None = None
    failure = ""
    api_before = api.cpu_times()
    with CpuMeter() as cpu:
        started = time.perf_counter()
        try:
            response = post_file(client, source, timeout_s)
        except httpx.HTTPError as error:
            failure = repr(error)
        elapsed_s = time.perf_counter() - started
    api_after = api.cpu_times()
    # Checked after the clock stops: the glob and stat are not the upload's time.
    problems = [failure] if response is None else stored_problems(response, source, files_dir)
    return {
        "status": response.status_code if response is not None else None,
        "body": response.json() if response is not None and response.status_code == 201 else None,
        "problems": problems,
        "seconds": round(elapsed_s, 3),
        "mb_per_s": None if problems else source.size / MB / elapsed_s,
        "cpu_busy_pct": cpu.busy_pct,
        "api_user_s": round(api_after.user - api_before.user, 2),
        "api_system_s": round(api_after.system - api_before.system, 2),
    }


# ---------------------------------------------------------------------------------------------
# The baselines: the same bytes copied on the same filesystem


def chunked_copy(source: Path, target: Path, deadline: float) -> None:
    with source.open("rb") as reader, target.open("wb") as writer:
        for _ in until(deadline):
            if not (chunk := reader.read(COPY_CHUNK)):
                return
            writer.write(chunk)
    raise BenchError(f"the chunked copy of {source.name} ran out of time")


def measure_copy(copy: Callable[[Path, Path], object], source: Generated) -> dict[str, Any]:
    target = source.path.with_name(f"{source.path.name}.copy")
    os.sync()
    with CpuMeter() as cpu:
        started = time.perf_counter()
        copy(source.path, target)
        elapsed_s = time.perf_counter() - started
    copied = target.stat().st_size
    target.unlink()  # the disk holds one copy at a time
    if copied != source.size:
        raise BenchError(f"the copy of {source.path.name} has {copied} bytes, not {source.size}")
    return {
        "seconds": round(elapsed_s, 3),
        "mb_per_s": source.size / MB / elapsed_s,
        "cpu_busy_pct": cpu.busy_pct,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, slowest and fastest of an operation's runs; failed uploads have no MB/s."""
    rates = [r["mb_per_s"] for r in runs if r["mb_per_s"] is not None]
    busy = [r["cpu_busy_pct"] for r in runs if r["cpu_busy_pct"] is not None]
    summary = {
        "runs": len(runs),
        "median_s": statistics.median(r["seconds"] for r in runs),
        "mb_per_s": statistics.median(rates) if rates else None,
        "mb_per_s_min": min(rates, default=None),
        "mb_per_s_max": max(rates, default=None),
        "cpu_busy_pct": statistics.median(busy) if busy else None,
    }
    if "api_user_s" in runs[0]:
        for key in ("api_user_s", "api_system_s"):
            summary[key] = statistics.median(r[key] for r in runs)
    return summary | {"each": runs}


def measure_size(
    client: httpx.Client,
    api: psutil.Process,
    source: Generated,
    files_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``args.runs`` rounds of the upload and the two copies of the same file, with the API's
    RSS (and the client's) watched from before the first upload to after the last."""
    mib = source.size // MIB
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in OPERATIONS}
    copies: dict[str, Callable[[Path, Path], object]] = {
        "copyfile": shutil.copyfile,
        "chunked_copy": lambda s, t: chunked_copy(s, t, time.monotonic() + args.timeout),
    }
    with watching_rss(api) as server_rss, watching_rss(psutil.Process()) as client_rss:
        for round_number in range(1, args.runs + 1):
            print(f"== {mib} MiB, round {round_number} of {args.runs}: upload, then the copies")
            upload = measure_upload(client, api, source, files_dir, args.timeout)
            for problem in upload["problems"]:
                print(f"   problem: {problem}")
            runs["upload"].append(upload)
            for key, copy in copies.items():
                runs[key].append(measure_copy(copy, source))
    summaries = {key: summarize(runs[key]) for key in OPERATIONS}
    api_rss = server_rss.summary()
    return {
        "size_mib": source.size / MIB,
        "sha256": source.sha256,
        "generate_s": round(source.seconds, 2),
        **summaries,
        "upload_per_copyfile": ratio(
            summaries["upload"]["mb_per_s"], summaries["copyfile"]["mb_per_s"]
        ),
        "upload_per_chunked_copy": ratio(
            summaries["upload"]["mb_per_s"], summaries["chunked_copy"]["mb_per_s"]
        ),
        "api_rss": api_rss,
        "client_rss": client_rss.summary(),
        "rss_target_met": api_rss["growth_mib"] < RSS_TARGET_MIB,
        "problems": [p for run in runs["upload"] for p in run["problems"]],
    }


# ---------------------------------------------------------------------------------------------
# The product under test


def sign_in(client: httpx.Client) -> str:
    """Create the tenant and its owner; the owner's access token."""
    created = client.post("/api/v1/tenants", json=TENANT)
    if created.status_code != 201:
        raise BenchError(
            f"POST /api/v1/tenants: expected 201, got {created.status_code}: {created.text}"
        )
    login = client.post("/api/v1/auth/login", json=LOGIN)
    if login.status_code != 200 or "access_token" not in login.json():
        raise BenchError(
            f"POST /api/v1/auth/login: expected 200, got {login.status_code}: {login.text}"
        )
    return str(login.json()["access_token"])


def limits(sizes: list[int], runs: int) -> tuple[int, int]:
    """The product's upload size limit and tenant quota: far above one file and all of them."""
    upload_max = max(MIN_UPLOAD_LIMIT, 2 * max(sizes))
    return upload_max, max(2 * upload_max, 2 * runs * sum(sizes))


def server_environment(data_dir: Path, port: int, upload_max: int, quota: int) -> dict[str, str]:
    """Local-disk storage (the default, said explicitly) and the raised limits."""
    return product_environment(data_dir, port) | {
        "TENANTRY_STORAGE_BACKEND": "local",
        "TENANTRY_UPLOAD_MAX_BYTES": str(upload_max),
        "TENANTRY_TENANT_QUOTA_BYTES": str(quota),
    }


def check_disk(directory: Path, sizes: list[int], runs: int) -> int:
    """Free bytes under ``directory``. Each file is there once, its stored objects once per round
    (a deleted file's bytes stay until a sweep) and one copy at a time, beside PostgreSQL."""
    free = shutil.disk_usage(directory).free
    needed = (runs + 2) * sum(sizes) + 2 * WARM_UP_BYTES + DISK_MARGIN
    if free < needed:
        raise BenchError(
            f"{directory} has {free / GIB:.1f} GiB free, the run needs {needed / GIB:.1f} GiB: "
            "use a smaller --size-mib or fewer --runs"
        )
    return free


def memory_total() -> int:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    return int(next(x for x in meminfo if x.startswith("MemTotal")).split()[1]) * 1024


# ---------------------------------------------------------------------------------------------
# Report


def markdown_tables(report: dict[str, Any]) -> str:
    lines = [
        "| Size MiB | Operation | runs | median s | MB/s median | MB/s slowest | MB/s fastest "
        "| CPU busy % | API CPU s, user + system |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        for key, label in OPERATIONS.items():
            o = r[key]
            rates = " | ".join(cell(o[k]) for k in ("mb_per_s", "mb_per_s_min", "mb_per_s_max"))
            api_cpu = (
                f"{o['api_user_s']:.2f} + {o['api_system_s']:.2f}" if "api_user_s" in o else "-"
            )
            lines.append(
                f"| {r['size_mib']:g} | {label} | {o['runs']} | {o['median_s']:.3f} | {rates} "
                f"| {cell(o['cpu_busy_pct'], 0)} | {api_cpu} |"
            )
    lines += [
        "",
        "| Size MiB | upload ÷ copyfile | upload ÷ read/write loop |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['size_mib']:g} | {cell(r['upload_per_copyfile'], 2)} "
        f"| {cell(r['upload_per_chunked_copy'], 2)} |"
        for r in report["results"]
    ]
    lines += [
        "",
        f"| Size MiB | uploads | API RSS before MiB | peak MiB | after MiB | growth MiB "
        f"| growth < {RSS_TARGET_MIB} MiB | client RSS growth MiB | samples | checks |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in report["results"]:
        api, problems = r["api_rss"], r["problems"]
        lines.append(
            f"| {r['size_mib']:g} | {r['upload']['runs']} | {api['before_mib']:.1f} "
            f"| {api['peak_mib']:.1f} | {api['after_mib']:.1f} | {api['growth_mib']:.1f} "
            f"| {'yes' if r['rss_target_met'] else 'NO'} "
            f"| {r['client_rss']['growth_mib']:.1f} | {api['samples']} "
            f"| {f'{len(problems)} problem(s)' if problems else 'ok'} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="size of the large upload (default 1024)"
    )
    parser.add_argument(
        "--small-mib", type=int, default=100, help="size of the sanity upload (default 100)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="rounds of upload and copies per size; the median is reported (default 3)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds each step (writing a file, an upload, a copy) may take (default 600)",
    )
    args = parser.parse_args()
    if min(args.size_mib, args.small_mib, args.runs) < 1 or args.timeout <= 0:
        parser.error("sizes must be at least 1 MiB, --runs at least 1, --timeout positive")
    return args


def run(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    machine = describe_machine() | {"memory_total_gib": round(memory_total() / GIB, 1)}
    print(
        f"machine: nproc {machine['nproc']}, {machine['cpu_model']}, "
        f"{machine['memory_total_gib']} GiB RAM, {machine['python']}, {machine['platform']}"
    )
    sizes = [args.size_mib * MIB, args.small_mib * MIB]
    upload_max, quota = limits(sizes, args.runs)
    log_path = RESULTS_DIR / f"upload-{stamp}.server.log"
    with tempfile.TemporaryDirectory(prefix="tenantry-bench-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        machine["temp_dir"] = str(work)
        machine["temp_free_gib"] = round(check_disk(work, sizes, args.runs) / GIB, 1)
        print(f"temporary directory: {work} ({machine['temp_free_gib']} GiB free)")
        machine["background_cpu_busy_pct"] = background_load()

        print(f"== writing the files: {args.size_mib} MiB, {args.small_mib} MiB of text")
        warm_up = generate(work / "warm-up.txt", WARM_UP_BYTES, args.timeout)
        files = [
            generate(work / f"upload-{size // MIB}mib.txt", size, args.timeout) for size in sizes
        ]
        for file in files:
            print(f"   {file.path.name}: sha256 {file.sha256}, written in {file.seconds:.2f} s")

        data_dir = work / "data"
        files_dir = data_dir / "files"  # the local storage's default root
        port = free_port()
        base_url = f"http://{HOST}:{port}"
        env = server_environment(data_dir, port, upload_max, quota)
        print(f"== starting tenantry dev on {base_url} (log: {log_path})")
        with running(
            tenantry("dev"), name="tenantry dev", env=env, cwd=work, log_path=log_path
        ) as process:
            ready_s = wait_ready(process, base_url, log_path, "tenantry dev")
            print(f"   ready after {ready_s:.1f} s")
            api = psutil.Process(process.pid)
            with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
                client.headers["Authorization"] = f"Bearer {sign_in(client)}"
                # The upload path's first use (imports, pools, the parser) is not what we measure.
                warm = post_file(client, warm_up, args.timeout)
                if problems := stored_problems(warm, warm_up, files_dir):
                    raise BenchError(f"the warm-up upload failed: {'; '.join(problems)}")
                results = [measure_size(client, api, file, files_dir, args) for file in files]
        print(f"== tenantry dev stopped with exit code {process.returncode}")

    return {
        "timestamp": stamp,
        "machine": machine,
        "options": vars(args),
        "server": {
            "ready_s": round(ready_s, 2),
            "exit_code": process.returncode,
            "log": str(log_path),
            "upload_max_bytes": upload_max,
            "tenant_quota_bytes": quota,
            "client_chunk_bytes": CLIENT_CHUNK,
        },
        "rss_target_growth_mib": RSS_TARGET_MIB,
        "results": results,
        "notes": NOTES,
    }


def report_upload(report: dict[str, Any], _stamp: str) -> bool:
    print(markdown_tables(report))
    print()
    print("\n".join(f"- {note}" for note in report["notes"]))
    for r in report["results"]:
        for problem in r["problems"]:
            print(f"\n{r['size_mib']:g} MiB upload: {problem}")
    holds = all(r["rss_target_met"] for r in report["results"])
    print(f"\nAPI RSS growth under {RSS_TARGET_MIB} MiB: {'holds' if holds else 'FAILS'}")
    failed = not holds or any(r["problems"] for r in report["results"])
    return bool(report["server"]["exit_code"] == 0) and not failed


def main() -> int:
    args = parse_args()
    # NoSuchProcess: the API process exited during the run (its log says why).
    return bench_main(
        "upload", lambda stamp: run(args, stamp), report_upload, (psutil.NoSuchProcess,)
    )


if __name__ == "__main__":
    sys.exit(main())
