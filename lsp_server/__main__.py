"""`python -m lsp_server`: the language server on stdio, or on loopback TCP with --tcp."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def redact_keys(record: logging.LogRecord) -> bool:
    """A logging filter: the record's message with API keys and tokens replaced by <redacted>."""
    from lsp_server.context.privacy import redact_log_line

    message = record.getMessage()
    cleaned = redact_log_line(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lsp_server", description=__doc__)
    parser.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio (loopback only)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --tcp on a non-loopback address (anyone who can connect can read your code)")
    parser.add_argument("--log-file", help="write logs here instead of stderr")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lsp_server import __version__

    if args.version:
        print(f"codellama-lsp {__version__}")
        return 0
    handler: logging.Handler = (logging.FileHandler(args.log_file) if args.log_file
                                else logging.StreamHandler(sys.stderr))
    handler.addFilter(redact_keys)  # at debug level pygls logs whole messages, settings included
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # pygls logs every message body at INFO: only useful when debugging the protocol itself.
        logging.getLogger("pygls").setLevel(logging.WARNING)
    if args.tcp:
        host, sep, port = args.tcp.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit():
            print("--tcp takes HOST:PORT, e.g. 127.0.0.1:2087", file=sys.stderr)
            return 2
        if not args.allow_remote and not is_loopback(host):
            print(f"refusing to listen on {host}: not a loopback address. Your code would be readable by "
                  "anyone who can reach it; pass --allow-remote if that is what you want.", file=sys.stderr)
            return 2

    from lsp_server.memory import maybe_start_tracemalloc, tune_malloc

    tune_malloc()  # before torch and the server's threads allocate
    maybe_start_tracemalloc()
    from lsp_server.server import create_server, exit_process


    server = create_server()
    if args.tcp:
        server.start_tcp(host, int(port))
    else:
        server.start_io()
    # The client closed the connection without `exit`: end as quickly as after `exit`.
    exit_process(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
