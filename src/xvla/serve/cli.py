"""``xvla serve``: the policy server sub-command (registered by :mod:`xvla.cli`).

Nothing heavy is imported here: FastAPI, uvicorn and torch load only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os


def _domain_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a policy over HTTP (official POST /act API, native POST /v1/act, dynamic batching)",
        description="Serve an X-VLA checkpoint over HTTP. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--policy.path", dest="policy_path", required=True, help="checkpoint folder (any format) or Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8010)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda when available)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: the checkpoint's dtype")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' (default: env XVLA_API_KEY)")
    p.add_argument("--max-batch-size", type=int, default=8, help="most samples in one forward pass")
    p.add_argument("--batch-timeout-ms", type=float, default=5.0,
                   help="how long the first waiting sample waits for others to join its batch")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request size limit (413 above it)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting samples before answering 503")
    p.add_argument("--steps", type=int, default=None, help="default denoising steps (default: the checkpoint's)")
    p.add_argument("--max-steps", type=int, default=100, help="largest 'steps' a request may ask for")
    p.add_argument("--domain-ids", type=_domain_list, default=None,
                   help="serve only these domain ids, e.g. '0,3' (default: all of the checkpoint's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the server's noise generator (unseeded requests)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--encoded-channel-order", choices=["rgb", "bgr"], default="rgb",
                   help="channel order given to JPEG/PNG-encoded images after decoding; 'bgr' reproduces the "
                        "official server, which decodes with OpenCV")  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--access-log", action="store_true", help="log every request line (uvicorn access log)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise OSError(f"xvla serve needs the 'serve' extra ({exc.name} is missing): pip install 'xvla[serve]'") from None
    from .server import ServeConfig, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ServeConfig(
        policy_path=args.policy_path,
        host=args.host,
        port=args.port,
        device=args.device,
        dtype=args.dtype,
        api_key=args.api_key or os.environ.get("XVLA_API_KEY") or None,
        max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        max_body_mb=args.max_body_mb,
        max_queue=args.max_queue,
        steps=args.steps,
        max_steps=args.max_steps,
        seed=args.seed,
        domain_ids=args.domain_ids,
        threads=args.threads,
        encoded_channel_order=args.encoded_channel_order,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    serve(cfg)
    return 0
