"""`zsbench protocol show P` and `zsbench protocol diff A B`: what a protocol fixes, and where two differ."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from benchmark.cli_args import comma_list


def add_commands(commands: argparse._SubParsersAction) -> None:
    protocol = commands.add_parser("protocol", help="show one resolved protocol, or diff two")
    actions = protocol.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="print one protocol as its hash covers it (class-name files read)")
    show.add_argument("protocol", help="protocol name or path to a YAML file")
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="show the derived protocol with this setting changed (as eval --set)")
    show.add_argument("--format", choices=["yaml", "json"], default="yaml", help="output format (default: yaml)")
    show.set_defaults(func=cmd_protocol_show)
    difference = actions.add_parser("diff", help="every setting in which two protocols differ, benchmark by benchmark")
    difference.add_argument("a", help="protocol name or path to a YAML file")
    difference.add_argument("b", help="protocol name or path to a YAML file")
    difference.add_argument("--benchmark", help="comma-separated benchmarks to compare (default: all)")
    difference.add_argument("--format", choices=["md", "json"], default="md", help="output format (default: md)")
    difference.set_defaults(func=cmd_protocol_diff)


def cmd_protocol_show(args: argparse.Namespace) -> int:
    from benchmark.protocol import load_protocol, parse_overrides
    from benchmark.protocol_diff import resolved

    content = resolved(load_protocol(args.protocol, parse_overrides(args.set)))
    if args.format == "json":
        sys.stdout.write(json.dumps(content, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(content, sort_keys=False, allow_unicode=True, width=120))
    return 0


def cmd_protocol_diff(args: argparse.Namespace) -> int:
    from benchmark.errors import ConfigError
    from benchmark.protocol import load_protocol
    from benchmark.protocol_diff import as_json, diff, render_markdown

    a, b = load_protocol(args.a), load_protocol(args.b)
    benchmarks = comma_list(args.benchmark)
    if benchmarks:
        known = sorted(set(a.benchmarks) | set(b.benchmarks))
        unknown = [name for name in benchmarks if name not in known]
        if unknown:
            raise ConfigError(f"--benchmark {','.join(unknown)}: in neither protocol; benchmarks: {', '.join(known)}")
    result = diff(a, b, benchmarks)
    if args.format == "json":
        sys.stdout.write(json.dumps(as_json(result), indent=2) + "\n")
    else:
        sys.stdout.write(render_markdown(result))
    return 0
