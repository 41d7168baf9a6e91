"""`gatehouse`: the command line. `apply`, `delete`, `server` and `completion` are written here;
every resource command is generated from the API's descriptors (cli/generated.py)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from typing import Any

import grpc
import shtab

from cli import generated
from cli.agent import run_agent
from cli.apply import apply_file, delete_file
from cli.config import CliConfig, CliError, UsageError
from cli.dashboard import open_dashboard
from cli.descriptors import Command, api_files, commands
from cli.output import error
from gatehouse import limits, metrics
from gatehouse.client.connection import Stubs

SERVICE_ROLES = ("registry", "provisioner", "certificates", "xds")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _global_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--server",
        default=default,
        help="API address host:port (default: $GATEHOUSE_SERVER or the CLI config)",
    )
    parser.add_argument(
        "--project", default=default, help="project (default: $GATEHOUSE_PROJECT or the CLI config)"
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subparsers(child)]
    return found


def _file_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    flag = parser.add_argument("-f", "--file", required=True, help=help_text)
    flag.complete = shtab.FILE  # type: ignore[attr-defined]


METRICS_PORT_HELP = (
    f"Prometheus metrics port, on $GATEHOUSE_METRICS_HOST "
    f"(default {metrics.DEFAULT_HOST}:{metrics.DEFAULT_PORT}; 0 picks a free one)"
)


def build_parser(files: list[Any] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="gatehouse", description="A front door for services.")
    _global_flags(parser, None)
    top = parser.add_subparsers(dest="top", metavar="COMMAND", parser_class=_Parser)

    server = top.add_parser("server", help="run registry, provisioner, certificates and xDS in one process")
    server.add_argument("--host", help="API host (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="API port (default 50051; 0 picks a free one)")
    server.add_argument("--metrics-port", type=int, help=METRICS_PORT_HELP)
    for role in SERVICE_ROLES:
        one = top.add_parser(role, help=f"run the {role} service on its own")
        one.add_argument("--host")
        one.add_argument("--port", type=int)
        one.add_argument("--metrics-port", type=int, help=METRICS_PORT_HELP)
        one.add_argument("--registry", help="the registry's address (default $GATEHOUSE_REGISTRY)")

    apply = top.add_parser("apply", help="create or update what a configuration file describes")
    run = top.add_parser("run", help="dstack's older form of apply: `run [DIR] -f FILE`")
    run.add_argument("directory", nargs="?", metavar="DIR", help="the working directory (dstack's `.`)")
    for parser_of_apply in (apply, run):
        _file_flag(parser_of_apply, "a *.dstack.yml configuration")
        parser_of_apply.add_argument("-y", "--yes", action="store_true", help="answer yes to every question")
        parser_of_apply.add_argument(
            "--force", action="store_true", help="apply even if the resource changed since the plan"
        )
        parser_of_apply.add_argument("-d", "--detach", action="store_true", help="do not wait until it runs")

    delete = top.add_parser("delete", help="delete what a configuration file describes")
    _file_flag(delete, "a *.dstack.yml configuration")
    delete.add_argument("-y", "--yes", action="store_true", help="answer yes")
    delete.add_argument("--force", action="store_true", help="a gateway: delete its services too")

    agent = top.add_parser("agent", help="make a replica behind NAT reachable through the gateway")
    agent.add_argument("--service", required=True, help="the service the replica belongs to")
    agent.add_argument("--target", required=True, help="host:port of the replica, as this machine reaches it")
    agent.add_argument(
        "--id", dest="replica_id", help="a stable replica id (default: <service>-agent-<host>)"
    )

    completion = top.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"))

    dashboard = top.add_parser("dashboard", help="open the web dashboard, logged in with the CLI's token")
    dashboard.add_argument("--url", help="the dashboard's address (default: this machine's server)")
    dashboard.add_argument("--no-open", action="store_true", help="only print the address")

    top.add_parser(
        "token",
        help='print the CLI\'s token, for `curl -H "Authorization: Bearer $(gatehouse token)" URL`',
    )

    generated.add_groups(top, commands(files if files is not None else api_files()), _Parser)
    # `--project` and `--server` wherever they are typed: `gatehouse secrets add N V --project P`.
    for child in _subparsers(parser):
        _global_flags(child, argparse.SUPPRESS)
    return parser


async def _client_command(args: argparse.Namespace) -> int:
    config = CliConfig.load(server=args.server, project=args.project)
    if args.top == "agent":
        connect = functools.partial(Stubs.connect, config.server, config.token)
        return await run_agent(connect, config.project, args.service, args.target, args.replica_id)
    stubs = Stubs.connect(config.server, config.token)
    try:
        if args.top in ("apply", "run"):
            if args.top == "run" and args.directory and not os.path.isdir(args.directory):
                raise UsageError(f"{args.directory}: no such directory")
            return await apply_file(stubs, config.project, args.file, args.yes, args.force, args.detach)
        if args.top == "delete":
            return await delete_file(stubs, config.project, args.file, args.yes, args.force)
        command: Command = args.command
        return await generated.run(stubs.channel, command, args, config.project)
    except grpc.aio.AioRpcError as rpc_error:
        if rpc_error.code() == grpc.StatusCode.UNAVAILABLE:
            raise CliError(
                f"cannot reach the Gatehouse server at {config.server}: start it with `gatehouse server` "
                "or set GATEHOUSE_SERVER"
            ) from None
        if rpc_error.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise CliError(f"the server at {config.server} does not offer this command") from None
        if rpc_error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            most = limits.size(limits.API_REQUEST_BYTES)
            raise CliError(f"the request is larger than the server takes (at most {most})") from None
        raise CliError(rpc_error.details() or rpc_error.code().name.lower()) from None
    finally:
        await stubs.close()


def _run_server(args: argparse.Namespace) -> int:
    from services.common.settings import Settings
    from services.server import configure_logging, serve_all, serve_one

    configure_logging()
    settings = Settings.from_env(api_host=args.host, api_port=args.port, metrics_port=args.metrics_port)
    if args.top == "server":
        asyncio.run(serve_all(settings))
    else:
        asyncio.run(serve_one(settings, args.top, args.registry))
    return 0


def _completion(parser: argparse.ArgumentParser, shell: str) -> int:
    print(shtab.complete(parser, shell=shell))
    return 0


def _token(args: argparse.Namespace) -> int:
    print(CliConfig.load(server=args.server, project=args.project).token)
    return 0


def _reader_gone() -> int:
    """`gatehouse gateway list --json | head -1`: the reader left; exit quietly, as `cat` does.
    Whatever Python still holds for stdout goes nowhere instead of into a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.top is None:
            parser.print_help()
            return 2
        if args.top == "server" or args.top in SERVICE_ROLES:
            return _run_server(args)
        if args.top == "completion":
            return _completion(parser, args.shell)
        if args.top == "token":
            return _token(args)
        if args.top == "dashboard":
            token = CliConfig.load(server=args.server, project=args.project).token
            return open_dashboard(args.url, token, not args.no_open)
        if args.top not in ("apply", "run", "delete", "agent") and getattr(args, "command", None) is None:
            raise UsageError(f"`gatehouse {args.top}` needs a COMMAND (see `gatehouse {args.top} --help`)")
        if getattr(args, "command", None) is not None:
            generated.check_args(args.command, args)
        code = asyncio.run(_client_command(args))
        sys.stdout.flush()
        return code
    except UsageError as usage:
        error(str(usage))
        return 2
    except CliError as failure:
        error(str(failure))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_gone()


if __name__ == "__main__":
    sys.exit(main())
