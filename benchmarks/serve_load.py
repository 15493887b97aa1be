"""Load and fuzz test of the policy server, on loopback only, bounded in time and request count.

Starts ``xvla serve`` in a subprocess on a free 127.0.0.1 port (a small random checkpoint built on
the spot unless ``--policy.path`` is given), then:

1. load: for each N in ``--concurrency`` (default 1 2 4 8), N clients - each its own robot with its
   own domain id - send official ``/act`` payloads back to back for ``--duration`` seconds (at most
   ``--max-requests`` requests per level). Prints throughput, p50/p99 latency, error counts and the
   mean batch size the server formed;
2. fuzz: ``--fuzz`` (default 1000) malformed requests drawn from ~40 mutation families of a valid
   payload (seeded). Every answer must be a 4xx; a 5xx, a dropped connection or a dead server
   counts as a crash. The server must still answer a valid request at the end.

    python benchmarks/serve_load.py                       # ~1 minute on 2 CPU cores
    python benchmarks/serve_load.py --duration 3 --fuzz 1000 --size tiny
    python benchmarks/serve_load.py --policy.path DIR --device cuda --concurrency 1 8 32
    python benchmarks/serve_load.py --mixed 600            # + 10 minutes of checked load with faults injected

3. mixed (``--mixed SECONDS``): checked clients send seeded requests whose answers are compared with the
   answer each got alone, while other threads hang up in a batch, send bodies slowly, announce oversized
   bodies and send malformed ones; then SIGTERM with checked requests in flight. Counts server crashes
   (a 5xx, the process gone before SIGTERM, an unclean exit) and wrong answers; both must be 0.

Exit status 1 if the fuzz run found a crash, the load run saw errors, or the mixed run a crash or a wrong answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


# ------------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, policy_path: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [
        sys.executable, "-m", "xvla.cli", "serve", f"--policy.path={policy_path}", "--host", "127.0.0.1",
        "--port", str(port), "--device", args.device, "--max-batch-size", str(args.max_batch_size),
        "--batch-timeout-ms", str(args.batch_timeout_ms), "--log-level", "warning", "--max-body-mb", "8",
        "--body-timeout-s", str(args.body_timeout_s),
    ]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT / "src")}
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("the server did not start within 120 s")


# ------------------------------------------------------------------------------------------ payloads
def encode(array: np.ndarray) -> str:
    """What ``json_numpy.dumps(array)`` writes (the real package is used when installed)."""
    try:
        import json_numpy

        return json_numpy.dumps(array)
    except ImportError:
        from xvla.serve.client import encode_array

        return json.dumps(encode_array(array))


def official_payload(rng: np.random.Generator, info: dict, domain_id: int, height=224, width=224) -> dict:
    views = min(2, info["views"]["max_images"])
    body = {
        "proprio": encode(rng.standard_normal(info["proprio_dim"]).astype(np.float32)),
        "language_instruction": "pick up the red block and place it in the bowl",
        "domain_id": int(domain_id),
    }
    for v in range(views):
        body[f"image{v}"] = encode(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return body


# ------------------------------------------------------------------------------------------ load
def load_level(
    url: str, info: dict, clients: int, duration: float, max_requests: int, image_size: int
) -> dict:
    import httpx

    domains = info["domain_ids"]
    rng = np.random.default_rng(clients)
    bodies = [
        json.dumps(official_payload(rng, info, domains[i % len(domains)], image_size, image_size)).encode()
        for i in range(clients)
    ]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    budget = [max_requests]
    stop_at = time.perf_counter() + duration
    barrier = threading.Barrier(clients)

    def client(i: int) -> None:
        with httpx.Client(
            base_url=url, timeout=60, transport=httpx.HTTPTransport(socket_options=NODELAY)
        ) as http:
            barrier.wait()
            while time.perf_counter() < stop_at:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                start = time.perf_counter()
                try:
                    response = http.post(
                        "/act", content=bodies[i], headers={"content-type": "application/json"}
                    )
                    key = str(response.status_code)
                    ok = response.status_code == 200 and len(response.json()["action"]) == info["chunk_size"]
                except httpx.HTTPError as exc:
                    key, ok = type(exc).__name__, False
                elapsed = time.perf_counter() - start
                with lock:
                    statuses[key] = statuses.get(key, 0) + 1
                    if ok:
                        latencies.append(elapsed)

    before = httpx.get(url + "/health").json()["stats"]
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    after = httpx.get(url + "/health").json()["stats"]
    batches = after["batches"] - before["batches"]
    samples = after["samples"] - before["samples"]
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": sum(statuses.values()),
        "ok": len(lat),
        "errors": sum(statuses.values()) - len(lat),
        "throughput": len(lat) / wall,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan"),
        "mean_batch": samples / batches if batches else float("nan"),
        "statuses": statuses,
    }


# ------------------------------------------------------------------------------------------ fuzz
def bad_arrays(rng: random.Random) -> list:
    """Values that are never a valid image or state."""
    b64 = encode(np.zeros((4, 4, 3), np.uint8))
    header = json.loads(b64)
    return [
        "garbage",
        "",
        "{",
        "[]",
        "[[1, 2], [3]]",
        "null",
        "3",
        '{"a": 1}',
        7,
        -1.5,
        True,
        [],
        ["x"],
        {"x": 1},
        json.dumps({**header, "dtype": rng.choice(["|O", "<U3", "<c8", "V4", "foo", "<M8[s]", "|b1"])}),
        json.dumps({**header, "shape": [rng.randint(5, 10**7), rng.randint(5, 10**7), 3]}),
        json.dumps({**header, "shape": [-4, -4, 3]}),
        json.dumps({**header, "shape": "4,4,3"}),
        json.dumps({**header, "__numpy__": header["__numpy__"][:-8]}),
        json.dumps({**header, "__numpy__": "*" * len(header["__numpy__"])}),
        json.dumps({k: v for k, v in header.items() if k != rng.choice(list(header))}),
        json.dumps({**header, "dtype": ["<f4"]}),
        encode(np.zeros((4, 4), np.uint8)),
        encode(np.zeros((4, 4, 4), np.uint8)),
        encode(np.zeros((2, 4, 4, 3), np.uint8)),
        encode(np.zeros((0, 4, 3), np.uint8)),
        encode(np.full((4, 4, 3), np.nan, np.float32)),
        encode(np.zeros((4, 4, 3), np.int16)),
        encode(np.frombuffer(bytes(rng.getrandbits(8) for _ in range(64)), np.uint8)),
        encode(np.frombuffer(b"\x89PNG\r\n\x1a\n" + bytes(40), np.uint8)),
        encode(np.frombuffer(b"\xff\xd8\xff\xe0" + bytes(40), np.uint8)),
        "[" * 3000 + "]" * 3000,
    ]


def bad_states(rng: random.Random, width: int) -> list:
    return [
        encode(np.zeros(width + rng.randint(1, 50), np.float32)),
        encode(np.array([0.0, float("nan")], np.float32)),
        encode(np.array([float("inf")] * 3)),
        encode(np.array([-float("inf")], np.float64)),
        encode(np.zeros((2, width), np.float32)),
        encode(np.zeros(0, np.float32)),
        '["a", "b"]',
        "[1, [2]]",
        "garbage",
        None,
        {"x": 1},
        5,
        "[NaN]",
        "[1e999]",
        encode(np.zeros(3, np.complex64)),
    ]


def bad_scalars(rng: random.Random, top: int) -> list:
    return [
        -1,
        -(10**12),
        top + rng.randint(0, 100),
        10**30,
        2.5,
        "seven",
        "",
        None,
        [1],
        {"a": 1},
        True,
        "1e3",
        "NaN",
    ]


def fuzz_requests(rng: random.Random, info: dict, good: dict, count: int, max_body: int):
    """Yield (path, body bytes, description) for ``count`` malformed requests."""
    width = info["proprio_dim"]
    families = []

    def field_swap(field, pool):
        def make():
            value = rng.choice(pool)
            body = dict(good)
            if value is None:
                body.pop(field, None)
            else:
                body[field] = value
            return "/act", json.dumps(body).encode(), f"{field}={str(value)[:40]!r}"

        return make

    families += [field_swap(k, bad_arrays(rng)) for k in ("image0", "image1")]
    families.append(field_swap("proprio", bad_states(rng, width)))
    families.append(field_swap("domain_id", bad_scalars(rng, info["num_domains"])))
    families.append(field_swap("steps", [0, -3, info["max_steps"] + 1, 10**9, "many", 1.5, [2], True]))
    families.append(field_swap("language_instruction", [None, 5, ["pick"], {"t": 1}, "x" * 5000, True]))

    def drop_required():
        missing = rng.choice(["proprio", "domain_id", "language_instruction"])
        body = {k: v for k, v in good.items() if k != missing}
        return "/act", json.dumps(body).encode(), f"missing {missing}"

    def no_images():
        return (
            "/act",
            json.dumps({k: v for k, v in good.items() if not k.startswith("image")}).encode(),
            "no image",
        )

    def too_many_images():
        body = dict(good)
        for v in range(3, 3 + rng.randint(1, 3)):
            body[f"image{v}"] = good["image0"]
        return "/act", json.dumps(body).encode(), "too many images"

    def raw_bytes():
        return "/act", bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200))), "random bytes"

    def truncated():
        text = json.dumps(good).encode()
        return "/act", text[: rng.randint(0, len(text) - 1)], "truncated JSON"

    def not_object():
        return "/act", rng.choice([b"[]", b"null", b"42", b'"act"', b"true", b"[{}]"]), "non-object JSON"

    def nan_literal():
        return (
            "/act",
            json.dumps(good).replace('"domain_id": ', '"domain_id": NaN, "x": ').encode(),
            "NaN literal",
        )

    def oversized():
        return "/act", b'{"pad": "' + b"x" * (max_body + rng.randint(1, 4096)) + b'"}', "oversized body"

    def native_bad():
        obs = {"observation.images.a": rng.choice(bad_arrays(rng)), "observation.state": [0.0], "task": "x"}
        body = rng.choice(
            [
                {"observations": [obs]},
                {"observations": []},
                {"observations": "x"},
                {"observation": 5},
                {"observations": [{"task": "x"}]},
                {"observations": [{}] * 100},
                {"nothing": 1},
            ]
        )
        return "/v1/act", json.dumps(body).encode(), "native"

    families += [
        drop_required,
        no_images,
        too_many_images,
        raw_bytes,
        truncated,
        not_object,
        nan_literal,
        native_bad,
        oversized,
    ]
    for i in range(count):
        yield rng.choice(families if i % 50 else [oversized])()


def fuzz(url: str, info: dict, count: int, seed: int, proc: subprocess.Popen) -> dict:
    import httpx

    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    good = official_payload(nprng, info, info["domain_ids"][0], 32, 32)
    counts = {"4xx": 0, "5xx": 0, "2xx": 0, "connection errors": 0}
    examples: list[str] = []
    with httpx.Client(
        base_url=url, timeout=30, transport=httpx.HTTPTransport(socket_options=NODELAY)
    ) as http:
        for i, (path, body, what) in enumerate(fuzz_requests(rng, info, good, count, 8 * 1024 * 1024)):
            try:
                status = http.post(
                    path, content=body, headers={"content-type": "application/json"}
                ).status_code
                bucket = f"{status // 100}xx"
            except httpx.HTTPError as exc:
                bucket, status = "connection errors", type(exc).__name__
            counts[bucket] = counts.get(bucket, 0) + 1
            if bucket != "4xx" and len(examples) < 10:
                examples.append(f"{what} -> {status}")
            if i % 100 == 0 and proc.poll() is not None:
                break
        alive = proc.poll() is None
        valid = http.post("/act", json=good).status_code if alive else None
    crashes = counts["5xx"] + counts["connection errors"] + (0 if alive and valid == 200 else 1)
    return {
        "sent": sum(counts.values()),
        **counts,
        "alive": alive,
        "valid_after": valid,
        "crashes": crashes,
        "examples": examples,
    }


# ------------------------------------------------------------------------------------------ mixed faults
class Tally:
    """Counts shared by the load and fault threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, kind: str, outcome: str) -> None:
        with self.lock:
            row = self.counts.setdefault(kind, {})
            row[outcome] = row.get(outcome, 0) + 1


def reference_answers(url: str, info: dict, count: int, seed: int, steps: int | None = None) -> list:
    """Seeded official bodies and each one's answer when it is the only request the server sees."""
    import httpx

    rng = np.random.default_rng(seed)
    domains = info["domain_ids"]
    out = []
    for i in range(count):
        body = {**official_payload(rng, info, domains[i % len(domains)], 32, 32), "seed": 1000 + i}
        if steps is not None:
            body["steps"] = steps
        data = json.dumps(body).encode()
        answer = httpx.post(
            url + "/act", content=data, headers={"content-type": "application/json"}, timeout=120
        )
        out.append((data, np.asarray(answer.json()["action"], dtype=np.float32)))
    return out


def checked_post(http, data: bytes, expected: np.ndarray, kind: str, tally: Tally) -> None:
    import httpx

    try:
        answer = http.post("/act", content=data, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        tally.add(kind, type(exc).__name__)
        return
    if answer.status_code != 200:
        tally.add(kind, str(answer.status_code))
    else:
        same = np.abs(np.asarray(answer.json()["action"], np.float32) - expected).max() <= 1e-4
        tally.add(kind, "right" if same else "WRONG")


def checked_client(url: str, refs, stop_at: float, tally: Tally, seed: int) -> None:
    """Seeded requests back to back; every 200 is compared with the answer the request got alone."""
    import httpx

    rng = random.Random(seed)
    with httpx.Client(
        base_url=url, timeout=60, transport=httpx.HTTPTransport(socket_options=NODELAY)
    ) as http:
        while time.perf_counter() < stop_at:
            checked_post(http, *rng.choice(refs), "checked requests", tally)


def raw_post(port: int, data: bytes, declared: int | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /act HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data) if declared is None else declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def raw_status(sock: socket.socket) -> str:
    try:
        first = sock.recv(64).split(b" ", 2)
        return first[1].decode() if len(first) > 1 else "closed"
    except OSError as exc:
        return type(exc).__name__
    finally:
        sock.close()


def fault_thread(
    kind: str, port: int, url: str, refs, info: dict, stop_at: float, tally: Tally, seed: int
) -> None:
    """One kind of fault, injected again and again until ``stop_at``."""
    import httpx

    rng = random.Random(seed)
    malformed = fuzz_requests(rng, info, json.loads(refs[0][0]), 10**9, 8 * 1024 * 1024)
    while time.perf_counter() < stop_at:
        data = rng.choice(refs)[0]
        if kind == "hang-up in a batch":  # the whole request, then a reset while it waits in the queue
            sock = raw_post(port, data)
            time.sleep(rng.uniform(0.0, 0.02))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
            tally.add(kind, "sent")
        elif kind == "slow body":  # half the body, then nothing: a 408 after --body-timeout-s
            tally.add(kind, raw_status(raw_post(port, data[: len(data) // 2], declared=len(data))))
        elif kind == "oversized body":  # 100 MB announced, never sent: a 413 before any of it is read
            tally.add(kind, raw_status(raw_post(port, b"", declared=100 * 1024 * 1024)))
        else:  # malformed requests from the fuzz families: 4xx each
            path, body, _ = next(malformed)
            try:
                status = httpx.post(
                    url + path, content=body, headers={"content-type": "application/json"}, timeout=60
                )
                tally.add(kind, f"{status.status_code // 100}xx")
            except httpx.HTTPError as exc:
                tally.add(kind, type(exc).__name__)
        time.sleep(rng.uniform(0.05, 0.3))


FAULTS = ("hang-up in a batch", "slow body", "oversized body", "malformed")
EXPECTED = {
    "checked requests": "right",
    "hang-up in a batch": "sent",
    "slow body": "408",
    "oversized body": "413",
    "malformed": "4xx",
    "SIGTERM in flight": "right",
}
# A malformed draw is sometimes valid after all (a 2xx); only a 5xx or a dropped connection is a crash.


def mixed_faults(
    url: str, info: dict, seconds: float, clients: int, seed: int, proc: subprocess.Popen
) -> dict:
    """Checked clients and every fault at once for ``seconds``, then SIGTERM with checked requests in flight."""
    port = int(url.rsplit(":", 1)[1])
    refs = reference_answers(url, info, 16, seed)
    long_refs = reference_answers(url, info, clients, seed + 1, steps=info["max_steps"])  # in flight a while
    tally, stop_at = Tally(), time.perf_counter() + seconds
    threads = [
        threading.Thread(target=checked_client, args=(url, refs, stop_at, tally, seed + i))
        for i in range(clients)
    ]
    threads += [
        threading.Thread(target=fault_thread, args=(k, port, url, refs, info, stop_at, tally, seed + 100 + i))
        for i, k in enumerate(FAULTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = proc.poll() is None
    code = sigterm_in_flight(url, long_refs, clients, tally, proc)
    counts = tally.counts
    wrong = sum(row.get("WRONG", 0) for row in counts.values())
    crashes = (
        int(not alive)
        + int(code not in (0, -signal.SIGTERM))
        + sum(n for row in counts.values() for k, n in row.items() if k.startswith("5"))
    )
    return {
        "seconds": seconds,
        "counts": counts,
        "alive_before_sigterm": alive,
        "exit_code": code,
        "crashes": crashes,
        "wrong_answers": wrong,
    }


def sigterm_in_flight(url: str, refs, clients: int, tally: Tally, proc: subprocess.Popen) -> int:
    """Long requests, then SIGTERM while they run: each must come back right (or, not yet connected, be refused)."""
    import httpx

    def one(data, expected):
        with httpx.Client(base_url=url, timeout=120) as http:
            checked_post(http, data, expected, "SIGTERM in flight", tally)

    threads = [threading.Thread(target=one, args=ref) for ref in refs[:clients]]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while httpx.get(url + "/health", timeout=5).json()["pending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)  # until a request is inside the server
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    return proc.wait(120)


def print_mixed(result: dict) -> None:
    print(f"\nmixed faults for {result['seconds']:.0f} s, then SIGTERM with requests in flight:")
    print(f"{'traffic':<22}{'expected':>10}  outcomes")
    for kind, row in result["counts"].items():
        print(
            f"{kind:<22}{EXPECTED.get(kind, '-'):>10}  "
            + ", ".join(f"{k} {v}" for k, v in sorted(row.items()))
        )
    print(
        f"server alive until SIGTERM: {'yes' if result['alive_before_sigterm'] else 'NO'}, exit code "
        f"{result['exit_code']}; server crashes: {result['crashes']}; wrong answers: {result['wrong_answers']}"
    )


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--policy.path", dest="policy_path", default=None, help="default: build a random checkpoint"
    )
    parser.add_argument(
        "--size", choices=["tiny", "small"], default="tiny", help="the random checkpoint's size"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--max-requests", type=int, default=20000, help="cap per concurrency level")
    parser.add_argument("--image-size", type=int, default=224, help="side of the raw frames the clients send")
    parser.add_argument("--fuzz", type=int, default=1000, help="malformed requests to send (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="server torch threads (0: torch's default)")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mixed",
        type=float,
        default=0.0,
        help="seconds of checked load with every fault injected, "
        "then SIGTERM with requests in flight (600: the 10-minute run; 0: skip)",
    )
    parser.add_argument("--mixed-clients", type=int, default=4, help="checked clients during --mixed")
    parser.add_argument(
        "--body-timeout-s", type=float, default=2.0, help="the server's body timeout (slow bodies)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    if (
        args.duration <= 0
        or args.duration > 120
        or args.max_requests < 1
        or args.fuzz > 100000
        or not (0 <= args.mixed <= 3600)
    ):
        parser.error(
            "keep the run bounded: 0 < --duration <= 120, --max-requests >= 1, --fuzz <= 100000, "
            "0 <= --mixed <= 3600"
        )

    tmp = Path(tempfile.mkdtemp(prefix="xvla_serve_load_"))
    policy_path = args.policy_path
    if policy_path is None:
        from xvla.serve.tiny_checkpoint import tiny_checkpoint

        policy_path = str(tiny_checkpoint(tmp / "checkpoint", size=args.size))
    proc, url = start_server(args, policy_path, tmp / "server.log")
    failed = False
    try:
        import httpx

        info = httpx.get(url + "/info").json()
        print(
            f"server {url}: {Path(policy_path).name} ({args.size if args.policy_path is None else 'given'}), "
            f"{info['action_mode']} chunk {info['chunk_size']}x{info['action_dim']}, {info['denoising_steps']} "
            f"denoising steps, {info['device']} {info['dtype']}, server torch threads={args.threads or 'default'}, "
            f"max batch {args.max_batch_size}, batch timeout {args.batch_timeout_ms} ms"
        )
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"python {platform.python_version()}; clients send 2 views of {args.image_size}x{args.image_size} "
            "uint8 frames (json_numpy), mixed domain ids, official /act"
        )
        load_level(url, info, 1, 1.0, 50, args.image_size)  # warm-up
        rows = []
        print(
            f"\n{'clients':>7} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'mean batch':>11}"
        )
        for n in args.concurrency:
            row = load_level(url, info, n, args.duration, args.max_requests, args.image_size)
            rows.append(row)
            failed |= row["errors"] > 0
            print(
                f"{n:>7} {row['requests']:>9} {row['throughput']:>8.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} "
                f"{row['errors']:>7} {row['mean_batch']:>11.2f}"
            )
        result = {"load": rows}
        if args.fuzz:
            start = time.perf_counter()
            fz = fuzz(url, info, args.fuzz, args.seed, proc)
            result["fuzz"] = fz
            failed |= fz["crashes"] > 0
            print(
                f"\nfuzz: {fz['sent']} malformed requests in {time.perf_counter() - start:.1f}s -> 4xx {fz['4xx']}, "
                f"5xx {fz['5xx']}, 2xx {fz['2xx']}, connection errors {fz['connection errors']}; server alive: "
                f"{'yes' if fz['alive'] else 'NO'}, valid request afterwards: {fz['valid_after']}; "
                f"crashes: {fz['crashes']}"
            )
            for line in fz["examples"]:
                print("  not a 4xx:", line)
        if args.mixed:
            result["mixed"] = mixed_faults(url, info, args.mixed, args.mixed_clients, args.seed, proc)
            failed |= result["mixed"]["crashes"] > 0 or result["mixed"]["wrong_answers"] > 0
            print_mixed(result["mixed"])
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = (tmp / "server.log").read_text()
    if "Traceback" in log:
        print("\nthe server log holds a traceback:\n" + log[-3000:])
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
