"""An in-process upload run's py-spy samples, the product's beside its bare server's, by layer
(bench/README.md, method 66).

    py-spy record -r 400 -f raw -o up.raw -- .venv/bin/python bench/inprocess.py \\
        --scenario upload --requests 1500 --rounds 3 [--database-url URL] [--redis-url URL]
    uv run python bench/layers.py up.raw --uploads 4500 --rate 400

bench/inprocess.py sends each round's uploads to upload_row's bare server, then to the
product, each from its own line of ``timed``: a sample whose stack passes one of those lines is
that server's event loop at work on an upload. Each is put in the first bucket whose markers
its stack holds; then in the request middleware's when the deepest frame of a layer is the
middleware's; else in the rest (Litestar's dispatch, dependencies and response, the handler's
own code). Samples are the loop's wall time while not idle (on the CPU or waiting for the GIL):
compare the buckets, do not read them as CPU.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

BARE_APP = Path(__file__).with_name("baseline_app.py")


def bare_lines(*texts: str) -> tuple[str, ...]:
    """Markers of the bare server's lines holding ``texts``: its hash, parser, thread hop and
    SQL's formatting run inline in its handler, with no Python frame of their own."""
    source = BARE_APP.read_text().splitlines()
    return tuple(
        f"{BARE_APP.name}:{number})"
        for number, line in enumerate(source, 1)
        if any(text in line for text in texts)
    )


BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "governance: audit event, outbox call, usage",
        ("application/audit.py", "application/usage.py"),
    ),
    ("credentials", ("authenticate_request", "verified_claims")),
    (
        "hash and inspection",
        ("Inspection.feed", *bare_lines("digest.update(", "digest.hexdigest()")),
    ),
    (
        "multipart body",
        ("PushMultipartParser", "FilePart", *bare_lines("parser.parse(", "request.stream()")),
    ),
    (
        "store: path, temporary name, thread hop",
        ("LocalDiskStorage", "storage/local.py", *bare_lines("run_in_executor(")),
    ),
    (
        "database: pool checkout and checkin",
        ("TenantTransaction.checkout", "_give_back", "PoolAcquireContext", "Pool.release"),
    ),
    ("database: the round trip on the driver", ("TenantTransaction.run", "Connection.execute")),
    (
        "database: the message's literals",
        (
            "_appended_sql",
            "sql_literals",
            "_begin_sql",
            "text_literal",
            "confirm_roles",
            *bare_lines("STORE_FILE.format("),
        ),
    ),
    (
        "database: unit of work, session, repositories",
        ("tenantry/infrastructure/db/", "sqlalchemy/", "advanced_alchemy/", "asyncpg/"),
    ),
)
MIDDLEWARE = "request middleware, logs, metrics"
REST = "Litestar's dispatch and response, the handler's own code"
_MIDDLEWARE_MARKERS = ("presentation/middleware.py", "observability/", "structlog", "prometheus")
_LAYERS = ("litestar/", "tenantry/", BARE_APP.name)
_TIMED = re.compile(r"^timed \(.*inprocess\.py:(\d+)\)$")


INPROCESS = Path(__file__).with_name("inprocess.py")
# timed's calls of each server, as bench/inprocess.py writes them.
CALLS = {"await request(bare)": "bare", "await request(app)": "product"}


def servers() -> dict[int, str]:
    """The lines of bench/inprocess.py that call the bare server and the product."""
    source = INPROCESS.read_text().splitlines()
    return {
        number: CALLS[line.strip()]
        for number, line in enumerate(source, 1)
        if line.strip() in CALLS
    }


def bucket(frames: list[str]) -> str:
    inner = ";".join(frames)
    for name, markers in BUCKETS:
        if any(marker in inner for marker in markers):
            return name
    for frame in reversed(frames):
        if any(marker in frame for marker in _MIDDLEWARE_MARKERS):
            return MIDDLEWARE
        if any(layer in frame for layer in _LAYERS):
            break
    return REST


def split(raw: Path) -> dict[str, Counter[str]]:
    lines = servers()
    counts: dict[str, Counter[str]] = {"product": Counter(), "bare": Counter()}
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        for index, frame in enumerate(frames):
            if (match := _TIMED.match(frame)) and int(match.group(1)) in lines:
                # Past timed and the request's own call, the server's frames.
                counts[lines[int(match.group(1))]][bucket(frames[index + 2 :])] += int(samples)
                break
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("raw", type=Path, help="py-spy's raw (collapsed) output")
    parser.add_argument("--uploads", type=int, required=True, help="uploads per server sampled")
    parser.add_argument("--rate", type=int, required=True, help="py-spy's samples per second")
    args = parser.parse_args()
    counts = split(args.raw)

    def per_upload(samples: int) -> float:
        return samples / args.rate / args.uploads * 1e6

    print(f"{'sampled µs of the event loop per upload':58s} {'product':>8s} {'bare':>8s} more")
    for name in [*(name for name, _ in BUCKETS), MIDDLEWARE, REST, "total"]:
        product, bare = (
            per_upload(sum(counts[who].values()) if name == "total" else counts[who][name])
            for who in ("product", "bare")
        )
        print(f"{name:58s} {product:8.0f} {bare:8.0f} {product - bare:5.0f}")


if __name__ == "__main__":
    main()
