"""``xvla serve``: the policy server sub-command; its flags are :class:`~xvla.serve.server.ServeConfig`'s
fields (see :mod:`xvla.flags`). FastAPI, uvicorn and torch load only when the command runs."""

from __future__ import annotations

import argparse
import logging
import os

from ..flags import add_dataclass_flags, dataclass_from_args


def register(sub) -> None:
    from .server import ServeConfig

    p = sub.add_parser(
        "serve",
        help="serve a policy over HTTP (official POST /act API, native POST /v1/act, dynamic batching)",
        description="Serve an X-VLA checkpoint over HTTP. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    add_dataclass_flags(
        p,
        ServeConfig,
        skip=("limits.max_steps",),
        aliases={"policy_path": ["--policy.path"], "adapters": ["--adapter"]},
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ModuleNotFoundError as exc:
        raise OSError(
            f"xvla serve needs the 'serve' extra ({exc.name} is missing): pip install 'xvla[serve]'"
        ) from None
    from .server import ServeConfig, serve

    if not hasattr(args, "policy_path"):
        raise ValueError(
            "xvla serve needs the checkpoint: pass --policy.path=DIR (a folder in any format, or a Hub id)"
        )
    cfg = dataclass_from_args(
        ServeConfig, args, api_key=getattr(args, "api_key", None) or os.environ.get("XVLA_API_KEY")
    )
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(cfg)
    return 0
