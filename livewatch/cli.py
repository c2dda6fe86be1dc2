"""The ``livewatch`` command. Only ``main`` chooses exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from livewatch import __version__
from livewatch.errors import FatalError
from livewatch.log import redact_url


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config file (default: built-in defaults)")
    parser.add_argument("--model", help="model id or local checkpoint directory")
    parser.add_argument("--camera", action="append", metavar="NAME=URL", help="camera to watch (repeatable)")
    parser.add_argument("--host", help="address to bind")
    parser.add_argument("--port", type=int, help="port to bind")
    parser.add_argument("--state-dir", help="state directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livewatch",
        description="Watch live cameras and answer questions about what they see (Qwen2.5-VL).",
    )
    parser.add_argument("--version", action="version", version=f"livewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = sub.add_parser("check-config", help="validate a config file and print the resolved settings")
    _add_config_args(check)
    return parser


def _settings_from_args(args: argparse.Namespace):
    from livewatch.config import load_settings

    return load_settings(
        args.config,
        model=args.model,
        cameras=args.camera,
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)
    summary = {
        "source": settings.source,
        "model": settings.model.model_dump(),
        "capture": settings.capture.model_dump(),
        "memory": settings.memory.model_dump(),
        "server": settings.server.model_dump(),
        "log": settings.log.model_dump(),
        "state_dir": str(settings.state_dir),
        "cameras": {cam.name: redact_url(cam.url) for cam in settings.cameras},
        "token": "set" if settings.token else "not set",
    }
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"check-config": _cmd_check_config}
    try:
        return handlers[args.command](args)
    except FatalError as exc:
        print(f"livewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
