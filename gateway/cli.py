"""The ``talkgate`` command: serve, sim, keys."""

from __future__ import annotations

import argparse
import sys


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from gateway.app import create_app
    from gateway.settings import Settings

    try:
        settings = Settings()
    except (ValidationError, ValueError, OSError) as exc:
        # A bad setting, an unknown key or a missing config file stops start-up with the
        # reason, not a traceback.
        from gateway.settings import describe_settings_error

        print(f"talkgate: invalid configuration: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    log_config: dict | None = uvicorn.config.LOGGING_CONFIG
    try:
        from gateway.logs import configure_logging

        configure_logging(settings)
        log_config = None  # uvicorn's own records then go through our handler (JSON, request id)
    except ImportError:
        pass
    from gateway.inputs.connections import guarded_http_protocol

    app = create_app(settings)
    limits = settings.limits
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config,
        access_log=False,
        loop="uvloop",
        http=guarded_http_protocol(limits.header_timeout_s, limits.max_waiting_connections),
        timeout_graceful_shutdown=30,
        timeout_keep_alive=int(settings.keep_alive_s),
    )
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.app import run_simulator
    from gateway.sim.exposure import UnsafeExposure

    try:
        run_simulator(host=args.host, port=args.port, nls_port=args.nls_port or None)
    except UnsafeExposure as exc:
        # Refused before binding: a clear reason and a non-zero exit, not a traceback.
        print(f"talkgate sim: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="talkgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_serve)

    p = sub.add_parser("sim", help="run the Bailian (DashScope) simulator")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address; a non-loopback one needs TALKGATE_SIM_API_KEYS and TALKGATE_SIM_CONTROL_TOKEN",
    )
    p.add_argument("--port", type=int, default=8100)
    p.add_argument(
        "--nls-port",
        type=int,
        default=0,
        help="also serve the simulated Alibaba Cloud NLS (CreateToken and /ws/v1) on this port "
        "(e.g. 8101); 0 (default): no NLS",
    )
    p.set_defaults(func=_sim)

    try:
        from gateway.keys_cli import add_keys_parser
    except ImportError:
        pass
    else:
        add_keys_parser(sub)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
