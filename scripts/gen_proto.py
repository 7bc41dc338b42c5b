"""Regenerate pixsent/caffe/proto/caffe_pb2.py from caffe.proto (needs grpcio-tools).

The protoc-generated module pins the protobuf runtime to the generator's version; the
descriptor-builder API it uses is stable since protobuf 4.21, so the pin is removed to
let pixsent run on any protobuf >= 4.21.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent.parent / "pixsent" / "caffe" / "proto"


def main() -> int:
    from grpc_tools import protoc

    rc = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"--python_out={PROTO_DIR}", str(PROTO_DIR / "caffe.proto")]
    )
    if rc != 0:
        return rc
    out = PROTO_DIR / "caffe_pb2.py"
    text = out.read_text()
    text = re.sub(r"from google\.protobuf import runtime_version as _runtime_version\n", "", text)
    text = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", text)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
