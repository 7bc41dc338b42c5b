"""``pixsent draw_net``: Caffe's python/draw_net.py (a net prototxt drawn with graphviz via pydot).

``draw_net NET.prototxt OUT.png [--rankdir LR] [--phase TRAIN|TEST|ALL] [--display_lrm]``; the output
format is the file's extension (``.raw`` writes graphviz's input text). Needs pydot and graphviz.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from pixsent.caffe import draw
    from pixsent.caffe.proto import caffe_pb2
    from pixsent.formats.prototxt import read_net

    net = read_net(args.input_net_proto_file)
    phase = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}[args.phase]
    print(f"Drawing net to {args.output_image_file}")
    draw.draw_net_to_file(net, args.output_image_file, args.rankdir, phase, args.display_lrm)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("draw_net", help="draw a net prototxt to an image (pydot + graphviz)")
    p.add_argument("input_net_proto_file", help="input net prototxt file")
    p.add_argument("output_image_file", help="output image file (format from the extension)")
    p.add_argument("--rankdir", default="LR", help="graphviz rankdir: LR, TB, BT or RL (default LR)")
    p.add_argument(
        "--phase", default="ALL", choices=["TRAIN", "TEST", "ALL"], help="draw the layers of this phase"
    )
    p.add_argument("--display_lrm", action="store_true", help="show each layer's lr_mult values")
    p.set_defaults(func=run)
