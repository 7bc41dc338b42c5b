"""Generated prototxts: SPEC's layer tables, shapes by Caffe's rules, solver arithmetic, staleness."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from google.protobuf import text_format

from pixsent.caffe.proto import caffe_pb2
from pixsent.cli import main as cli_main
from pixsent.recipes.paper import prototxt_gen, variants
from pixsent.recipes.paper.solver_config import SolverConfig
from pixsent.recipes.paper.variants import Fc9Activation, VariantConfig

REPO = Path(__file__).resolve().parent.parent

# SPEC section 2: (name, num_output, kernel, stride, pad, group)
TRUNK = [
    ("conv1", 96, 11, 4, 0, 1),
    ("conv2", 256, 5, 1, 2, 2),
    ("conv3", 384, 3, 1, 1, 1),
    ("conv4", 384, 3, 1, 1, 2),
    ("conv5", 256, 3, 1, 1, 2),
]
TRUNK_ORDER = [
    "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
    "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
]  # fmt: skip
HEADS = {
    "fc8_twitter": ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8_twitter"],
    "fc7-2": ["fc6", "relu6", "drop6", "fc7_twitter"],
    "fc6-2": ["fc6_twitter"],
    "fc9_twitter": ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "relu8", "drop8", "fc9_twitter"],
}
NEW_LAYERS = {"fc8_twitter", "fc7_twitter", "fc6_twitter", "fc9_twitter"}


def layer_map(netp: caffe_pb2.NetParameter) -> dict[str, caffe_pb2.LayerParameter]:
    return {lay.name: lay for lay in netp.layer}


def mults(layer: caffe_pb2.LayerParameter) -> list[tuple[float, float]]:
    return [(p.lr_mult, p.decay_mult) for p in layer.param]


def shapes(netp: caffe_pb2.NetParameter) -> dict[str, tuple[int, ...]]:
    """Top shapes by Caffe's rules: conv floor((H + 2p - k) / s) + 1, pooling ceil (window not in padding)."""
    out: dict[str, tuple[int, ...]] = {}
    for lay in netp.layer:
        if lay.type == "Input":
            out[lay.top[0]] = tuple(lay.input_param.shape[0].dim)
            continue
        n, c, h, w = out[lay.bottom[0]] + (1,) * (4 - len(out[lay.bottom[0]]))
        if lay.type == "Convolution":
            cp = lay.convolution_param
            k, s, p = cp.kernel_size[0], (cp.stride or [1])[0], (cp.pad or [0])[0]
            top = (n, cp.num_output, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
        elif lay.type == "Pooling":
            pp = lay.pooling_param
            k, s, p = pp.kernel_size, pp.stride, pp.pad
            oh, ow = (math.ceil((x + 2 * p - k) / s) + 1 for x in (h, w))
            top = (n, c, oh, ow)
        elif lay.type == "InnerProduct":
            top = (n, lay.inner_product_param.num_output)
        else:
            top = out[lay.bottom[0]]
        out[lay.top[0]] = top
        out[f"layer:{lay.name}:in"] = out[lay.bottom[0]]
        out[f"layer:{lay.name}:out"] = top
    return out


def train_val(variant: str, **kw) -> caffe_pb2.NetParameter:
    cfg = VariantConfig(variant=variant, **kw)
    return variants.train_val(cfg, train_source="tr", test_source="te", test_batch_size=44)


@pytest.mark.parametrize("variant", list(HEADS))
def test_variant_layers_match_spec(variant):
    netp = train_val(variant)
    names = [lay.name for lay in netp.layer]
    assert names == ["data", "data", *TRUNK_ORDER, *HEADS[variant], "accuracy", "loss"]
    lm = layer_map(netp)
    for name, nout, k, s, p, g in TRUNK:
        cp = lm[name].convolution_param
        got = (cp.num_output, list(cp.kernel_size), list(cp.stride) or [1], list(cp.pad) or [0], cp.group)
        assert got == (nout, [k], [s], [p], g), name
    for pool in ("pool1", "pool2", "pool5"):
        pp = lm[pool].pooling_param
        assert (pp.pool, pp.kernel_size, pp.stride) == (caffe_pb2.PoolingParameter.MAX, 3, 2)
    for norm in ("norm1", "norm2"):
        lp = lm[norm].lrn_param
        assert (lp.local_size, lp.alpha, lp.beta) == (5, pytest.approx(1e-4, rel=1e-6), 0.75)
    for lay in netp.layer:
        if lay.type in ("Convolution", "InnerProduct"):
            if lay.name in NEW_LAYERS:
                assert mults(lay) == [(10, 1), (20, 0)], lay.name
                ip = lay.inner_product_param
                assert ip.num_output == 2
                assert (ip.weight_filler.type, ip.weight_filler.std) == ("gaussian", pytest.approx(0.01))
                assert (ip.bias_filler.type, ip.bias_filler.value) == ("constant", 0)
            else:
                assert mults(lay) == [(1, 1), (2, 0)], lay.name
        if lay.type == "Dropout":
            assert lay.dropout_param.dropout_ratio == 0.5
            assert list(lay.top) == list(lay.bottom)
    for name in ("fc6", "fc7"):
        if name in lm:
            assert lm[name].inner_product_param.num_output == 4096
    train, test = netp.layer[0], netp.layer[1]
    assert (train.include[0].phase, test.include[0].phase) == (caffe_pb2.TRAIN, caffe_pb2.TEST)
    assert (train.transform_param.mirror, test.transform_param.mirror) == (True, False)
    for data in (train, test):
        assert data.transform_param.crop_size == 227
        assert data.transform_param.mean_file == "data/ilsvrc_2012_mean.binaryproto"
        assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert (train.data_param.batch_size, test.data_param.batch_size) == (256, 44)
    assert lm["accuracy"].include[0].phase == caffe_pb2.TEST
    assert lm["loss"].type == "SoftmaxWithLoss"
    assert list(lm["loss"].bottom) == [HEADS[variant][-1], "label"]


@pytest.mark.parametrize("variant", list(HEADS))
def test_deploy_shapes(variant):
    netp = variants.deploy(VariantConfig(variant=variant))
    s = shapes(netp)
    assert netp.layer[0].type == "Input" and s["data"] == (10, 3, 227, 227)
    assert s["pool5"] == (10, 256, 6, 6)
    assert s["layer:norm1:out"] == (10, 96, 27, 27) and s["layer:norm2:out"] == (10, 256, 13, 13)
    assert netp.layer[-1].name == "prob" and netp.layer[-1].type == "Softmax"
    assert s["prob"] == (10, 2)


def test_fullconv_shapes_451():
    netp = variants.fullconv_deploy()
    s = shapes(netp)
    assert s["data"] == (1, 3, 451, 451)
    # pool5 is 13 x 13 x 256 at 451; fc6-conv's 6 x 6 x 256 window slides over it: 13 - 6 + 1 = 8 positions
    assert s["layer:fc6-conv:in"] == (1, 256, 13, 13)
    assert s["layer:fc6-conv:out"] == (1, 4096, 8, 8)
    lm = layer_map(netp)
    assert [lm[n].convolution_param.kernel_size[0] for n in ("fc6-conv", "fc7-conv", "fc8_twitter-conv")] == [
        6,
        1,
        1,
    ]
    assert [lm[n].convolution_param.num_output for n in ("fc6-conv", "fc7-conv", "fc8_twitter-conv")] == [
        4096, 4096, 2,
    ]  # fmt: skip
    assert s["prob"] == (1, 2, 8, 8)
    assert lm["prob"].softmax_param.axis == 1  # over channels (the default)


def test_fullconv_fc6_window_is_6x6x256():
    """fc6-conv's kernel covers exactly the 6x6x256 pool5 map that fc6 saw at 227 x 227."""
    at227 = shapes(variants.deploy(VariantConfig()))["pool5"][1:]
    lm = layer_map(variants.fullconv_deploy())
    assert at227 == (256, 6, 6) and lm["fc6-conv"].convolution_param.kernel_size[0] == 6


def test_fc9_width_follows_init_and_activation_option():
    lm = layer_map(train_val("fc9_twitter", init="mvso-en"))
    assert lm["fc8"].inner_product_param.num_output == 4342
    assert lm["fc9_twitter"].inner_product_param.num_output == 2
    assert {"relu8", "drop8"} <= lm.keys()
    none = [lay.name for lay in train_val("fc9_twitter", fc9_activation="none").layer]
    assert "relu8" not in none and "drop8" not in none
    relu = [lay.name for lay in train_val("fc9_twitter", fc9_activation=Fc9Activation.RELU).layer]
    assert "relu8" in relu and "drop8" not in relu
    places = train_val("fc8_twitter", init="places")
    assert places.layer[0].transform_param.mean_file.endswith("places205CNN_mean.binaryproto")
    assert [lay.name for lay in places.layer] == [lay.name for lay in train_val("fc8_twitter").layer]


def test_five_agree_solver_180_iterations_and_6_epoch_steps():
    s = SolverConfig(net="n", snapshot_prefix="p", train_size=704, test_size=176)
    assert s.iters_per_epoch == 2.75
    assert s.max_iter == 180
    assert abs(s.stepsize - 6 * 2.75) <= 1 and s.stepsize == 17  # 16.5 rounded up
    assert s.test_iter * s.test_batch_size == 176
    msg = s.to_proto()
    assert (msg.base_lr, msg.momentum, msg.gamma, msg.lr_policy, msg.type) == (
        pytest.approx(0.001), pytest.approx(0.9), pytest.approx(0.1), "step", "SGD",
    )  # fmt: skip
    assert msg.weight_decay == pytest.approx(0.0005)
    text = s.to_text("header")
    assert text_format.Parse(text, caffe_pb2.SolverParameter()) == msg
    assert "# 65 epochs = 65 x 704 / 256 = 178.75 iterations" in text


def count(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("subset", ["five", "four", "three"])
def test_solvers_follow_each_subsets_training_size(subset, shared_data):
    fold = shared_data / "splits" / f"{subset}_agrees" / "test1"
    n_train, n_test = count(fold / "train.txt"), count(fold / "test.txt")
    files = prototxt_gen.expected_files([subset], splits=shared_data / "splits")
    solver = text_format.Parse(
        files[Path(f"prototxt/{subset}_agrees/fc8_twitter/fold1/solver.prototxt")],
        caffe_pb2.SolverParameter(),
    )
    assert solver.max_iter == 10 * math.ceil(65 * n_train / 256 / 10)
    assert solver.max_iter >= 65 * n_train / 256
    assert solver.stepsize == math.ceil(6 * n_train / 256)
    tv = text_format.Parse(
        files[Path(f"prototxt/{subset}_agrees/fc8_twitter/fold1/train_val.prototxt")],
        caffe_pb2.NetParameter(),
    )
    assert solver.test_iter[0] * tv.layer[1].data_param.batch_size >= n_test
    assert tv.layer[0].data_param.source == f"data/lmdb/{subset}_agrees/fold1/train_lmdb"
    assert tv.layer[1].data_param.source == f"data/lmdb/{subset}_agrees/fold1/test_lmdb"
    assert solver.net == f"prototxt/{subset}_agrees/fc8_twitter/fold1/train_val.prototxt"
    fc62 = text_format.Parse(
        files[Path(f"prototxt/{subset}_agrees/fc6-2/fold1/solver.prototxt")], caffe_pb2.SolverParameter()
    )
    assert fc62.base_lr == pytest.approx(0.0001)
    assert (subset, solver.max_iter) != ("five", 0)


def test_builtin_counts_match_split_files(shared_data):
    for subset, (train, test) in prototxt_gen.BUILTIN_COUNTS.items():
        for k in prototxt_gen.FOLDS:
            assert prototxt_gen.fold_sizes(subset, k, shared_data / "splits") == (train, test)
    assert prototxt_gen.fold_sizes("five", 1, [Path("/nonexistent")]) == (704, 176)


def test_every_generated_file_parses_back_to_the_same_message():
    files = prototxt_gen.expected_files(["five"])
    backbone_configs = [c for c in prototxt_gen.default_configs() if c.init != "caffenet"]
    assert len(files) == 4 * 5 * 2 + 4 + 1 + len(backbone_configs) * (5 * 2 + 1)
    for path, text in files.items():
        kind = caffe_pb2.SolverParameter if path.name == "solver.prototxt" else caffe_pb2.NetParameter
        msg = text_format.Parse(text, kind())
        again = text_format.Parse(text_format.MessageToString(msg), kind())
        assert msg == again, path
    tv = files[Path("prototxt/five_agrees/fc8_twitter/fold1/train_val.prototxt")]
    cfg = VariantConfig()
    assert text_format.Parse(tv, caffe_pb2.NetParameter()) == variants.train_val(
        cfg,
        train_source="data/lmdb/five_agrees/fold1/train_lmdb",
        test_source="data/lmdb/five_agrees/fold1/test_lmdb",
        test_batch_size=44,
    )


def test_committed_prototxt_is_not_stale():
    files = prototxt_gen.expected_files(["five"])
    assert prototxt_gen.stale(files, REPO) == [], "prototxt/ is stale: run `make prototxt`"


def test_check_flag_reports_stale_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["prototxt", "--out", "p"]) == 0
    assert cli_main(["prototxt", "--out", "p", "--check"]) == 0
    target = tmp_path / "p/five_agrees/fc7-2/fold3/solver.prototxt"
    target.write_text(target.read_text().replace("max_iter: 180", "max_iter: 179"))
    assert cli_main(["prototxt", "--out", "p", "--check"]) == 1
    assert "fc7-2/fold3/solver.prototxt" in capsys.readouterr().err


def test_write_variant_files_for_a_run_folder(tmp_path):
    out = tmp_path / "run"
    paths = prototxt_gen.write_variant_files(
        VariantConfig(variant="fc7-2"),
        out,
        train_source=tmp_path / "train_lmdb",
        test_source="/abs/test_lmdb",
        mean_file=tmp_path / "mean.binaryproto",
        snapshot_prefix="snapshots/fc7-2",
        train_size=892,
        test_size=223,
    )
    assert set(paths) == {"train_val", "solver", "deploy"}
    solver = text_format.Parse(paths["solver"].read_text(), caffe_pb2.SolverParameter())
    assert solver.net == str(out / "train_val.prototxt") and solver.snapshot_prefix == "snapshots/fc7-2"
    assert (solver.max_iter, solver.stepsize) == (230, 21)
    tv = text_format.Parse(paths["train_val"].read_text(), caffe_pb2.NetParameter())
    assert tv.layer[0].data_param.source == str(tmp_path / "train_lmdb")
    assert tv.layer[1].transform_param.mean_file == str(tmp_path / "mean.binaryproto")
    assert solver.test_iter[0] * tv.layer[1].data_param.batch_size >= 223
    assert not list(out.glob("*.tmp"))
