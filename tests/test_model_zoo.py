"""Model registry: complete and valid; fetch from a mirror folder with checksum check (never the network)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from pixsent import fetch as fetcher
from pixsent.cli import main as cli_main
from pixsent.errors import DataError, NetError
from pixsent.recipes import paper as _paper  # noqa: F401  (registers the paper's deploy generators)
from pixsent.zoo import registry as model_zoo

REQUIRED = {
    "caffenet": 1000,
    "places": 205,
    "deepsentibank": 2089,
    "mvso-en": 4342,
    "mvso-es": None,
    "mvso-fr": None,
    "mvso-it": None,
    "mvso-de": None,
    "mvso-zh": None,
    "twitter_finetuned_test4_iter_180": 2,
    "twitter_finetuned_test4_iter_180_conv": 2,
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"test tried the network: {url}")

    monkeypatch.setattr(fetcher, "_http_get", refuse)


def test_registry_complete_and_valid():
    reg = model_zoo.registry()
    assert set(REQUIRED) <= set(reg)
    for name, outputs in REQUIRED.items():
        e = reg[name]
        if outputs is not None:
            assert e.num_outputs == outputs, name
        assert e.architecture in model_zoo.ARCHITECTURES
        assert e.deploy["generator"] in model_zoo.DEPLOY_GENERATORS
        assert e.file and "/" not in e.file
        assert e.description and (e.urls or e.note)
        for url in e.urls:
            assert url.startswith(("http://", "https://"))
        assert e.sha1 is None or len(e.sha1) == 40
    assert reg["caffenet"].sha1 == "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"
    assert reg["caffenet"].urls == ("http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel",)
    base = "https://imatge.upc.edu/web/sites/default/files/projects/affective/public_html/2017-imavis/"
    assert reg["twitter_finetuned_test4_iter_180"].urls == (
        base + "twitter_finetuned_test4_iter_180.caffemodel",
    )
    assert reg["twitter_finetuned_test4_iter_180_conv"].urls == (
        base + "twitter_finetuned_test4_iter_180_conv.caffemodel",
    )
    assert reg["caffenet"].mean.file == "data/ilsvrc_2012_mean.binaryproto"
    assert reg["places"].mean.name == "places205"


def test_deploy_nets_match_registry_widths():
    for name in ("caffenet", "places", "deepsentibank", "mvso-en"):
        netp = model_zoo.deploy_net(name)
        fc8 = next(lay for lay in netp.layer if lay.name == "fc8")
        assert fc8.inner_product_param.num_output == REQUIRED[name]
    with pytest.raises(NetError, match="mvso-es"):
        model_zoo.deploy_net("mvso-es")
    assert model_zoo.deploy_net("mvso-es", num_outputs=7).layer[-2].inner_product_param.num_output == 7
    released = [lay.name for lay in model_zoo.deploy_net("twitter_finetuned_test4_iter_180").layer]
    assert released[-2:] == ["fc8_twitter", "prob"]
    conv = [lay.name for lay in model_zoo.deploy_net("twitter_finetuned_test4_iter_180_conv").layer]
    assert "fc6-conv" in conv


def fake_registry(tmp_path: Path, monkeypatch, **entry) -> Path:
    data = json.loads(model_zoo.REGISTRY_PATH.read_text())
    base = dict(next(m for m in data["models"] if m["name"] == "caffenet"))
    base.update(name="fake", **entry)
    data["models"] = [base]
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(model_zoo, "registry", lambda: model_zoo.load_registry(path))
    return path


def test_fetch_from_mirror_with_matching_checksum(tmp_path, monkeypatch):
    payload = b"not really a caffemodel"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fake.caffemodel").write_bytes(payload)
    fake_registry(
        tmp_path, monkeypatch, file="fake.caffemodel", sha1=hashlib.sha1(payload).hexdigest(),
        urls=["http://example.invalid/fake.caffemodel"],
    )  # fmt: skip
    dest = tmp_path / "models"
    got = model_zoo.fetch("fake", dest=dest, mirror=mirror, progress=False)
    assert got == dest / "fake.caffemodel" and got.read_bytes() == payload


def test_fetch_from_mirror_with_wrong_checksum_fails(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fake.caffemodel").write_bytes(b"corrupted")
    fake_registry(
        tmp_path,
        monkeypatch,
        file="fake.caffemodel",
        sha1="0" * 40,
        urls=["http://example.invalid/fake.caffemodel"],
    )
    dest = tmp_path / "models"
    with pytest.raises(DataError, match="sha1 mismatch"):
        model_zoo.fetch("fake", dest=dest, mirror=mirror, progress=False)
    assert not (dest / "fake.caffemodel").exists()


def test_fetch_without_url_needs_a_mirror(tmp_path, monkeypatch):
    fake_registry(tmp_path, monkeypatch, file="fake.caffemodel", sha1=None, urls=[])
    with pytest.raises(DataError, match="no public URL"):
        model_zoo.fetch("fake", dest=tmp_path / "models", mirror=tmp_path, progress=False)
    (tmp_path / "fake.caffemodel").write_bytes(b"x")
    got = model_zoo.fetch("fake", dest=tmp_path / "models", mirror=tmp_path, progress=False)
    assert got.read_bytes() == b"x"


def test_fetch_archive_extracts_members(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "pack.tar.gz", "w:gz") as tar:
        for member, data in (("pack/w.caffemodel", b"weights"), ("pack/mean.binaryproto", b"mean")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    fake_registry(
        tmp_path, monkeypatch, file="w.caffemodel", archive="pack.tar.gz", sha1=None,
        urls=["http://example.invalid/pack.tar.gz"],
        extract={"pack/w.caffemodel": "w.caffemodel", "pack/mean.binaryproto": "mean.binaryproto"},
    )  # fmt: skip
    got = model_zoo.fetch("fake", dest=tmp_path / "models", mirror=mirror, progress=False)
    assert got.read_bytes() == b"weights"
    assert (tmp_path / "models/mean.binaryproto").read_bytes() == b"mean"


def test_unknown_model_and_cli(tmp_path, capsys):
    with pytest.raises(DataError, match="unknown model 'nope'"):
        model_zoo.get("nope")
    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "caffenet" in out and "mvso-en" in out and "4342" in out
    assert cli_main(["models", "fetch", "nope", "--dest", str(tmp_path)]) == 1
    assert cli_main(["models", "deploy", "caffenet", "--out", str(tmp_path / "d.prototxt")]) == 0
    assert 'name: "fc8"' in (tmp_path / "d.prototxt").read_text()
