"""``pixsent extract_features``: Caffe's tools/extract_features.cpp, same arguments in the same order.

``extract_features WEIGHTS.caffemodel NET.prototxt BLOB1[,BLOB2...] DB1[,DB2...] NUM_MINI_BATCHES DB_TYPE
[CPU|GPU] [DEVICE_ID]``: builds the TEST-phase net, copies the weights, runs NUM_MINI_BATCHES forwards and
writes, for each named blob, one Datum per sample into its own new LMDB: channels/height/width the blob's
legacy axes (1 where it has fewer than 4), the sample's values as ``float_data``, keys the sample index as
10 zero-padded digits, committed every 1000 entries. As in Caffe the blob and database counts must match,
every blob must exist, and a database folder that exists already is an error (LMDB only here).
"""

from __future__ import annotations

import argparse

USAGE = (
    "extract_features pretrained_net_param feature_extraction_proto_file "
    "extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...] "
    "num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]"
)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from pixsent.caffe.proto import caffe_pb2
    from pixsent.engine import glog
    from pixsent.engine.net import Net
    from pixsent.errors import PixsentError
    from pixsent.formats.lmdb_io import LMDBWriter
    from pixsent.formats.origin import naming

    argv = args.argv
    if len(argv) < 6:
        raise PixsentError(f"usage: {USAGE}")
    weights, model, blob_arg, db_arg, batches_arg, db_type = argv[:6]
    device = "cpu"
    if len(argv) > 6 and argv[6] == "GPU":
        device_id = int(argv[7]) if len(argv) > 7 else 0
        glog.error("Using GPU", "extract_features.cpp:56")
        glog.error(f"Using Device_id={device_id}", "extract_features.cpp:62")
        device = f"cuda:{device_id}"
    else:
        glog.error("Using CPU", "extract_features.cpp:66")
    if db_type.lower() != "lmdb":
        raise PixsentError(f"extract_features: db_type {db_type!r} is not supported (use lmdb)")
    blob_names = blob_arg.split(",")
    db_names = db_arg.split(",")
    if len(blob_names) != len(db_names):
        raise PixsentError("extract_features: the number of blob names and dataset names must be equal")
    try:
        num_batches = int(batches_arg)
    except ValueError:
        raise PixsentError(f"extract_features: num_mini_batches {batches_arg!r} is not a number") from None
    with naming(model):
        net = Net(model, caffe_pb2.TEST, device=device, log=True)
    try:
        net.copy_trained_layers_from(weights)
        for name in blob_names:
            if name not in net.blobs:
                raise PixsentError(f"{model}: unknown feature blob name {name} in the network")
        writers = []
        for name in db_names:
            glog.info(f"Opening dataset {name}", "extract_features.cpp:128")
            writers.append(LMDBWriter(name))
        glog.error("Extracting Features", "extract_features.cpp:136")
        counts = [0] * len(blob_names)
        for _ in range(num_batches):
            with torch.no_grad():
                net.forward()
            for i, name in enumerate(blob_names):
                blob = net.blobs[name]
                values = blob.value().detach().cpu().numpy().astype(np.float32)
                num = blob.num
                flat = values.reshape(num, -1)
                for n in range(num):
                    datum = caffe_pb2.Datum(channels=blob.channels, height=blob.height, width=blob.width)
                    datum.float_data.extend(flat[n].tolist())
                    writers[i].put(f"{counts[i]:010d}".encode(), datum.SerializeToString())
                    counts[i] += 1
                    if counts[i] % 1000 == 0:
                        glog.error(
                            f"Extracted features of {counts[i]} query images for feature blob {name}",
                            "extract_features.cpp:168",
                        )
        for i, name in enumerate(blob_names):
            writers[i].close()
            glog.error(
                f"Extracted features of {counts[i]} query images for feature blob {name}",
                "extract_features.cpp:178",
            )
        glog.error("Successfully extracted the features!", "extract_features.cpp:182")
    finally:
        net.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract_features",
        help="Caffe's extract_features: blobs of a net's forwards into LMDBs of float Datums",
        usage=f"pixsent {USAGE}",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("argv", nargs="*")
    p.set_defaults(func=run)
