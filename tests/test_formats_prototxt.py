"""Prototxt reading/writing: golden nets and solvers, one-line FILE:LINE:COL errors, solver upgrade."""

from __future__ import annotations

import pytest

from pixsent.caffe.proto import caffe_pb2
from pixsent.errors import FormatError
from pixsent.formats.prototxt import parse_net, parse_solver, read_net, read_solver, to_text, write_prototxt


def test_golden_deploy_reads(golden):
    net = read_net(golden / "mini_caffenet/deploy.prototxt")
    assert net.name == "MiniCaffeNet"
    assert [la.name for la in net.layer][:3] == ["data", "conv1", "relu1"]
    assert net.layer[1].convolution_param.num_output == 16


@pytest.mark.parametrize("name", ["Adam", "AdaDelta", "AdaGrad", "Nesterov", "RMSProp"])
def test_golden_solvers_read(golden, name):
    solver = read_solver(golden / f"solver_types/{name}.solver.prototxt")
    assert solver.type == name and solver.max_iter == 10


def test_text_round_trip(golden, tmp_path):
    net = read_net(golden / "solver_run/net.prototxt")
    out = write_prototxt(net, tmp_path / "net.prototxt")
    assert read_net(out) == net
    assert to_text(net).startswith('name: "')


def test_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "a"\n}\n')
    with pytest.raises(FormatError) as err:
        read_net(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}:5:") and "\n" not in msg


def test_unknown_field_names_file_line_and_field(tmp_path):
    bad = tmp_path / "unknown.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  colour: 3\n}\n')
    with pytest.raises(FormatError) as err:
        read_net(bad)
    msg = str(err.value)
    assert msg.startswith(f"{bad}:4:3:") and "colour" in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="absent.prototxt: file not found"):
        read_net(tmp_path / "absent.prototxt")


def test_string_source_in_errors():
    with pytest.raises(FormatError, match=r"^<string>:1:\d+: "):
        parse_net("layer { name: }")


def test_solver_type_enum_is_upgraded():
    solver = parse_solver('solver_type: ADAM\nbase_lr: 0.1\nnet: "n.prototxt"\n')
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    with pytest.raises(FormatError, match="cannot both"):
        parse_solver('solver_type: ADAM\ntype: "Adam"\n', source="s.prototxt")


def test_legacy_input_fields_become_an_input_layer():
    net = parse_net('input: "data"\ninput_dim: 10\ninput_dim: 3\ninput_dim: 227\ninput_dim: 227\n'
                    'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n')  # fmt: skip
    assert not net.input and not net.input_dim
    assert [la.type for la in net.layer] == ["Input", "ReLU"]
    assert net.layer[0].name == "input" and list(net.layer[0].top) == ["data"]
    assert list(net.layer[0].input_param.shape[0].dim) == [10, 3, 227, 227]
    shaped = parse_net('input: "a"\ninput_shape { dim: 1 dim: 2 }\n')
    assert list(shaped.layer[0].input_param.shape[0].dim) == [1, 2]


def test_parse_into_any_message():
    from pixsent.formats.prototxt import parse_message

    blob = parse_message("shape { dim: 2 dim: 3 }", caffe_pb2.BlobProto(), "b")
    assert list(blob.shape.dim) == [2, 3]


@pytest.mark.parametrize(
    "name",
    [
        "mini_caffenet/deploy.prototxt",
        "mini_caffenet/fullconv.prototxt",
        "mini_caffenet/train_nodrop.prototxt",
        "solver_run/net.prototxt",
        "oversample/deploy_batch10.prototxt",
    ],
)
def test_every_golden_net_reads_current_and_round_trips(golden, name):
    net = read_net(golden / name)
    assert len(net.layer) > 0 and not net.layers and not net.input
    assert parse_net(to_text(net)) == net
