"""The ``livewatch`` command. Only ``main`` chooses exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from livewatch import __version__
from livewatch.errors import FatalError
from livewatch.log import redact_url

if TYPE_CHECKING:
    from livewatch.capture.masks import Masks


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

    serve_p = sub.add_parser("serve", help="run the daemon (the built-in test-pattern camera by default)")
    _add_config_args(serve_p)

    ask_p = sub.add_parser("ask", help="ask a question; the answer streams to stdout")
    _add_client_args(ask_p)
    ask_p.add_argument("--camera", help="camera to ask about (optional when the daemon watches one camera)")
    ask_p.add_argument("--max-tokens", type=int, help="longest answer, in tokens")
    ask_p.add_argument("--json", action="store_true", help="print the final answer message as JSON")
    ask_p.add_argument("--since", metavar="TIME", help="ask about the past from TIME (ISO 8601 or relative: -2h)")
    ask_p.add_argument("--until", metavar="TIME", help="... to TIME (default: now; --since defaults to 1 h before)")
    ask_p.add_argument("--evidence", type=Path, metavar="DIR",
                       help="save the answer (answer.json) and its evidence frames (RANK-ID.jpg) into DIR")
    ask_p.add_argument("question", nargs="+", help="the question")

    status_p = sub.add_parser("status", help="show cameras, memory and engine figures")
    _add_client_args(status_p)
    status_p.add_argument("--json", action="store_true", help="print the status message as JSON")

    cams = sub.add_parser("cameras", help="list, add or remove cameras of the running daemon")
    _add_client_args(cams)
    cam_sub = cams.add_subparsers(dest="action", metavar="ACTION", required=True)
    cam_sub.add_parser("ls", help="list cameras and their state")
    add_p = cam_sub.add_parser("add", help="attach a camera (kept across restarts)")
    add_p.add_argument("name")
    add_p.add_argument("camera_url", metavar="URL")
    rm_p = cam_sub.add_parser("rm", help="detach a camera and delete its frames")
    rm_p.add_argument("name")
    masks_p = cam_sub.add_parser("masks", help="show or set a camera's privacy masks (kept across restarts)")
    masks_p.add_argument("name")
    masks_how = masks_p.add_mutually_exclusive_group()
    masks_how.add_argument("--set", dest="masks", metavar="JSON",
                           help='polygons in relative coordinates, e.g. "[[0,0, 0.3,0, 0.3,0.2, 0,0.2]]"')
    masks_how.add_argument("--clear", action="store_true", help="remove every mask")

    watch = sub.add_parser("watch", help="list, add or remove watches (standing yes/no questions on a camera)")
    _add_client_args(watch)
    watch_sub = watch.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls_w = watch_sub.add_parser("ls", help="list watches with their state")
    ls_w.add_argument("--json", action="store_true", help="print the watch.list message as JSON")
    add_w = watch_sub.add_parser("add", help="add or replace a watch (kept across restarts)")
    add_w.add_argument("camera")
    add_w.add_argument("name")
    add_w.add_argument("condition", help='what to watch for, e.g. "a person is standing at the door"')
    add_w.add_argument("--on", type=float, default=0.7, help="P(yes) at or above which it holds (default 0.7)")
    add_w.add_argument("--off", type=float, default=0.4, help="P(yes) at or below which it ends (default 0.4)")
    add_w.add_argument("--confirm", type=int, default=2, help="consecutive evaluations that confirm (default 2)")
    add_w.add_argument("--cooldown", type=float, default=60.0, help="seconds between two starts (default 60)")
    add_w.add_argument("--hours", metavar="FROM-TO", help="active local hours, e.g. 22-6 (default: always)")
    add_w.add_argument("--describe", action="store_true", help="follow each start with a short description")
    rm_w = watch_sub.add_parser("rm", help="remove a watch")
    rm_w.add_argument("name")

    find_p = sub.add_parser("find", help="find the moments of the cameras' memory and history that show something")
    _add_client_args(find_p)
    find_p.add_argument("cameras", metavar="CAMERA", help="a camera, several separated by commas, or 'all'")
    find_p.add_argument("query", help='what to look for, e.g. "a red car in the drive"')
    find_p.add_argument("--since", default="24h", help="from (ISO 8601 or relative; default 24h ago)")
    find_p.add_argument("--until", help="to (default now)")
    find_p.add_argument("--top", type=int, default=5, help="moments to show (1-50, default 5)")
    find_p.add_argument("--json", action="store_true", help="print the find.result message as JSON")

    digest = sub.add_parser("digest", help="list the configured digests or run one now")
    _add_client_args(digest)
    digest_sub = digest.add_subparsers(dest="action", metavar="ACTION", required=True)
    digest_ls = digest_sub.add_parser("ls", help="digests with their schedule, last and next run")
    digest_ls.add_argument("--json", action="store_true", help="print the digest.list message as JSON")
    digest_run = digest_sub.add_parser("run", help="run a digest now and print it (also pushed as scheduled)")
    digest_run.add_argument("name")
    digest_run.add_argument("--json", action="store_true", help="print the digest as JSON")

    events = sub.add_parser("events", help="follow watch events until Ctrl-C")
    _add_client_args(events)
    events.add_argument("--watch", action="append", help="only this watch (repeatable; default: all)")
    events.add_argument("--json", action="store_true", help="one JSON event per line")

    check = sub.add_parser("check-config", help="validate a config file and print the resolved settings")
    _add_config_args(check)
    return parser


def _add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get("LIVEWATCH_URL", "ws://127.0.0.1:8765"),
        help="daemon URL (default: $LIVEWATCH_URL or ws://127.0.0.1:8765)",
    )
    parser.add_argument(
        "--token", default=None,
        help="API token (default: $LIVEWATCH_TOKEN); visible to other users in ps, prefer the variable or --token-file",
    )
    parser.add_argument("--token-file", type=Path, default=None, help="file holding the API token")


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
        "cameras": {cam.name: redact_url(cam.url) if cam.url or cam.crop is None
                    else f"zone of {cam.source} {cam.crop.to_json()}" for cam in settings.cameras},
        "digests": {name: d.model_dump() for name, d in settings.digests.items()},
        "cluster": settings.cluster.model_dump(),
        "token": "set" if settings.token else "not set",
    }
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from livewatch.daemon import Daemon
    from livewatch.log import configure_logging

    settings = _settings_from_args(args)
    configure_logging(settings.log.level, settings.log.format)
    # the state directory, frames and saved camera URLs (credentials) are the daemon's alone, whatever the umask
    os.umask(os.umask(0) | 0o077)
    if settings.cluster.backend == "ray":
        from livewatch.cluster import prepare_ray_environment

        prepare_ray_environment()
        try:
            import ray  # noqa: F401  (the cluster backend's runtime)
        except ImportError as exc:
            print(f"livewatch: cluster.backend = \"ray\" needs Ray: pip install 'livewatch[ray]' ({exc})",
                  file=sys.stderr)
            return 78  # EX_CONFIG, as a configuration error
    return asyncio.run(Daemon(settings).run())


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        print("livewatch: warning: --token is visible to other users (ps); use $LIVEWATCH_TOKEN or --token-file",
              file=sys.stderr)
        return str(args.token)
    if args.token_file is not None:
        from livewatch.client import EXIT_USAGE, ClientError

        try:
            return args.token_file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"cannot read --token-file {str(args.token_file)!r}: {exc}", EXIT_USAGE) from None
    return os.environ.get("LIVEWATCH_TOKEN") or None


def _cmd_ask(args: argparse.Namespace) -> int:
    from livewatch import client

    question = " ".join(args.question)
    return asyncio.run(client.ask(args.url, _token(args), question, args.camera, args.max_tokens, args.json,
                                  evidence_dir=args.evidence, since=args.since, until=args.until))


def _cmd_status(args: argparse.Namespace) -> int:
    from livewatch import client
    from livewatch.server.protocol import Status

    reply = asyncio.run(client.request(args.url, _token(args), Status(id=client.new_id())))
    if reply.get("type") == "error":
        raise client.ClientError(f"{reply.get('code')}: {reply.get('message')}", client.EXIT_REQUEST_FAILED)
    print(json.dumps(reply) if args.json else client.format_status(reply))
    return 0


def _cmd_cameras(args: argparse.Namespace) -> int:
    from livewatch import client
    from livewatch.server.protocol import CameraAdd, CameraMasks, CameraRemove, Status

    token = _token(args)
    if args.action == "ls":
        reply = asyncio.run(client.request(args.url, token, Status(id=client.new_id())))
        for name, cam in sorted(reply.get("cameras", {}).items()):
            print(f"{name}\t{cam.get('state')}\t{cam.get('source', '')}")
        return 0
    message: CameraAdd | CameraRemove | CameraMasks
    if args.action == "masks":
        message = CameraMasks(id=client.new_id(), camera=args.name, masks=_masks(args))
    elif args.action == "add":
        message = CameraAdd(id=client.new_id(), name=args.name, url=args.camera_url)
    else:
        message = CameraRemove(id=client.new_id(), name=args.name)
    reply = asyncio.run(client.request(args.url, token, message))
    if reply.get("type") == "error":
        raise client.ClientError(f"{reply.get('code')}: {reply.get('message')}", client.EXIT_REQUEST_FAILED)
    if reply["type"] == "camera.masks":
        print(json.dumps(reply["masks"]))
        return 0
    print(f"{reply['type']}: {reply['name']}" + (f" ({reply['url']})" if reply.get("url") else ""))
    return 0


def _masks(args: argparse.Namespace) -> Masks | None:
    from livewatch.capture.masks import NO_MASKS, parse_masks
    from livewatch.client import EXIT_USAGE, ClientError
    from livewatch.errors import MaskError

    if args.clear:
        return NO_MASKS
    if args.masks is None:
        return None
    try:
        return parse_masks(json.loads(args.masks))
    except (MaskError, RecursionError) as exc:
        raise ClientError(f"--set: {exc}", EXIT_USAGE) from None
    except ValueError:
        raise ClientError("--set: not valid JSON", EXIT_USAGE) from None


def _cmd_digest(args: argparse.Namespace) -> int:
    from livewatch import client
    from livewatch.server.protocol import DigestList, DigestRun

    message = DigestList(id=client.new_id()) if args.action == "ls" else DigestRun(id=client.new_id(),
                                                                                    digest=args.name)
    reply = asyncio.run(client.request(args.url, _token(args), message))
    if reply.get("type") == "error":
        raise client.ClientError(f"{reply.get('code')}: {reply.get('message')}", client.EXIT_REQUEST_FAILED)
    if args.json:
        print(json.dumps(reply["digest"] if args.action == "run" else reply))
    elif args.action == "ls":
        def when(t: float | None) -> str:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

        for d in reply["digests"]:
            print(f"{d['name']}\t{d['schedule']}\t{','.join(d['cameras'])}\tnext {when(d['next_run'])}\t"
                  f"last {when(d['last_run'])}")
    else:
        for cam in reply["digest"]["cameras"]:
            body = cam["text"] if "text" in cam else f"({cam['error']['code']}: {cam['error']['message']})"
            print(f"[{cam['camera']}] {body}")
    return 0


def _hours(text: str | None) -> tuple[int, int] | None:
    from livewatch.client import EXIT_USAGE, ClientError

    if text is None:
        return None
    try:
        start, end = (int(part) for part in text.split("-"))
    except ValueError:
        raise ClientError(f"--hours {text!r}: expected FROM-TO (FROM 0-23, TO 0-24, TO exclusive) such as 22-6 or 0-24", EXIT_USAGE) from None
    return start, end


def _cmd_watch(args: argparse.Namespace) -> int:
    from livewatch import client
    from livewatch.server import watchproto as wp

    message: wp.WatchRequest
    if args.action == "ls":
        message = wp.WatchList(id=client.new_id())
    elif args.action == "add":
        message = wp.WatchAdd(client.new_id(), args.name, args.camera, args.condition, args.on, args.off, args.confirm,
                              args.cooldown, _hours(args.hours), args.describe)
    else:
        message = wp.WatchRemove(id=client.new_id(), name=args.name)
    reply = asyncio.run(client.request(args.url, _token(args), message))
    if reply.get("type") == "error":
        raise client.ClientError(f"{reply.get('code')}: {reply.get('message')}", client.EXIT_REQUEST_FAILED)
    if args.action == "ls":
        if args.json:
            print(json.dumps(reply))
        for w in reply.get("watches", []):
            if not args.json:
                print(f"{w['name']}\t{w['camera']}\t{w['state']}\tp={w['last_probability']}\t"
                      f"events={w['events']}\t{w['condition']}")
    elif args.action == "add":
        print(f"watch.added: {reply['watch']['name']} on {reply['watch']['camera']}")
    else:
        print(f"watch.removed: {reply['name']}")
    return 0


def _cmd_find(args: argparse.Namespace) -> int:
    from livewatch import client

    cameras = None if args.cameras == "all" else tuple(c for c in args.cameras.split(",") if c)
    return asyncio.run(client.find(args.url, _token(args), cameras, args.query, args.since, args.until, args.top,
                                   args.json))


def _cmd_events(args: argparse.Namespace) -> int:
    from livewatch import client

    watches = tuple(args.watch) if args.watch else None
    return asyncio.run(client.follow_events(args.url, _token(args), watches, args.json))


def main(argv: list[str] | None = None) -> int:
    from livewatch.client import ClientError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {
        "serve": _cmd_serve,
        "ask": _cmd_ask,
        "status": _cmd_status,
        "cameras": _cmd_cameras,
        "watch": _cmd_watch,
        "events": _cmd_events,
        "find": _cmd_find,
        "digest": _cmd_digest,
        "check-config": _cmd_check_config,
    }
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # inside the try: a reader that went away (| head) is handled below
        return code
    except BrokenPipeError:
        # the reader of our output went away (`livewatch ask ... | head`): stop quietly, as Unix tools do;
        # stdout goes to /dev/null so that the interpreter's final flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE
    except FatalError as exc:
        print(f"livewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except ClientError as exc:
        print(f"livewatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
