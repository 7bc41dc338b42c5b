"""``pixsent caffe <action> -flag value``: Caffe's own command line (train, test, time, device_query).

Flags are Caffe's single-dash gflags (``-solver``, ``-weights``, ``-snapshot``, ``-gpu``, ``-iterations``,
...); ``--engine caffe`` or ``ENGINE=caffe`` hands the command to a real BVLC caffe binary.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from pixsent.cli.caffe_tool import add_flags

    parser = subparsers.add_parser(
        "caffe",
        help="Caffe's command line: train/test/time/device_query with Caffe's flags",
        description=__doc__.splitlines()[0],
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(parser)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from pixsent.cli.caffe_tool import flags_from_args, run

    return run(flags_from_args(args))
