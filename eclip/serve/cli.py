"""`eclip serve`: the search service and web page."""

from __future__ import annotations

from pathlib import Path

from eclip.config import add_arguments, add_set_argument


def _add_serve(sub) -> None:
    p = sub.add_parser(
        "serve", help="product search service and web page over an EMB_DIR (FastAPI + uvicorn)",
        description="Serve text, image and image+text search, similar products, classification, embeddings, "
                    "thumbnails and product updates (journaled in EMB_DIR/serving/) on http://HOST:PORT/ "
                    "(API docs at /docs). Defaults come from the shipped serve config (eclip/configs/serve/).")
    p.add_argument("--model", type=Path, required=True, metavar="RUN_DIR", help="a trained `eclip train` run")
    p.add_argument("--index", type=Path, required=True, metavar="EMB_DIR", help="an `eclip embed` output made with that model")
    p.add_argument("--data", type=Path, metavar="DATA_DIR", help="the prepared products, for thumbnails and details")
    p.add_argument("--config", type=Path, metavar="TOML", help="a file with a [serve] table (default: the shipped one)")
    add_set_argument(p, "max_k=50")
    from eclip.serve.config import load_serve_config
    add_arguments(p, load_serve_config(), "service settings (default: the shipped serve config)")
    p.set_defaults(handler=_run_serve)


def _run_serve(args) -> int:
    from eclip.config import apply_arguments
    from eclip.serve.app import serve
    from eclip.serve.config import load_serve_config

    config = apply_arguments(load_serve_config(args.config), args)
    print(f"serving {args.index} with {args.model} on http://{config.host}:{config.port}/ (API docs at /docs)")
    serve(args.model, args.index, args.data, config)
    return 0


# The subcommands this subsystem adds to `eclip`, in the order a user meets them.
COMMANDS = [_add_serve]
