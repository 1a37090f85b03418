"""``evomm serve RUN_DIR [--port 8765] [--host 127.0.0.1]``: the live dashboard of a run."""

from __future__ import annotations

import argparse
import errno


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a live dashboard of a run (the front, candidates, progress) in the browser",
        description="Serve a page that shows a run while it goes and after: the Pareto front (any two "
        "objectives, pair plot or parallel coordinates), each candidate's genes as heat maps beside the "
        "parents, hypervolume and throughput by generation, and an export button. The page reads the run "
        "directory through a JSON API (docs/dashboard.md) and writes nothing into it except the exports "
        "you ask for (RUN_DIR/exports/<id>).",
    )
    p.add_argument("run_dir", help="run directory of `evomm evolve` (running or finished)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the export button "
                   "writes under the run, so think twice before 0.0.0.0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomm.dashboard.server import make_server
    from evomm.errors import ConfigError

    try:
        server = make_server(args.run_dir, args.host, args.port, tuple(args.plugins_dir))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {args.port}: the port is in use on {args.host}; "
                              "pass another with --port (0 picks a free one)") from None
        raise ConfigError(f"--host {args.host} --port {args.port}: cannot listen there ({exc})") from None
    host, port = server.server_address[:2]
    print(f"evomm: serving {args.run_dir} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
