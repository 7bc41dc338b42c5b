"""The student: weak-label lists -> LMDBs -> the same training pipeline, any variant and initialisation.

The student is a fold of the pipeline (subset ``weak``, fold 1) whose split files are the labelling
step's ``splits/weak_agrees/test1``. Its recipe ``distill`` wraps a base recipe (``paper`` for CaffeNet
variants from any caffemodel, ``demo`` for the generated set) and, with soft labels, changes only the
TRAIN phase of the base train_val.prototxt:

* a second Data layer ``soft_label`` reads ``train_soft_lmdb``, whose Datums are 2 x 1 x 1 ``float_data``
  (p_neg, p_pos) stored under exactly the keys of the image LMDB, so both layers, reading keys in order
  with the same batch size, stay aligned batch after batch (how Caffe users fed vector targets);
* the TRAIN loss is ``SoftmaxCrossEntropyLoss`` (pixsent extension, see engine/layers/soft_loss.py) of the
  scores against ``soft_label``, and a Silence layer consumes the then unused hard label; the TEST phase
  keeps SoftmaxWithLoss and Accuracy on the hard labels.

Hard-label students use the base recipe's files unchanged, so real Caffe can train them (ENGINE=caffe).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from pixsent.caffe.proto import caffe_pb2
from pixsent.distill.labelling import SUBSET
from pixsent.errors import DataError, NetError
from pixsent.workflow.pipeline import FoldConfig, get_recipe, register_recipe
from pixsent.workflow.runs import RunPaths, file_fingerprint

RECIPE = "distill"
SOFT_LMDB = "train_soft_lmdb"
SOFT_TOP = "soft_label"


@dataclass
class StudentConfig:
    """What the student trains: the labelling output folder, the base recipe, variant and init."""

    labels: Path  # OUT of `pixsent distill label`
    images: Path  # image root the lists are relative to
    runs: Path = Path("runs/distill")
    lmdb_root: Path = Path("data/lmdb/distill")
    base: str = "paper"
    variant: str = "fc8_twitter"
    init: str = "caffenet"
    weights: Path | None = None
    soft: bool = False
    gpu: str | None = None
    engine: str = "pixsent"
    progress: bool = True
    echo: bool = True


def read_scores(path: Path) -> dict[str, tuple[float, float]]:
    """path -> (p_neg, p_pos) from the labelling step's scores.tsv."""
    if not Path(path).is_file():
        raise DataError(f"{path}: scores file not found (run `pixsent distill label` first)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    try:
        return {r["path"]: (float(r["p_neg"]), float(r["p_pos"])) for r in rows}
    except (KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path}: malformed scores file ({exc})") from None


def write_soft_lmdb(image_lmdb: Path, scores: dict[str, tuple[float, float]], out: Path) -> int:
    """One (p_neg, p_pos) float Datum per key of ``image_lmdb`` (key = 8-digit index, '_', list path)."""
    from pixsent.formats.lmdb_io import LMDBReader, LMDBWriter

    with LMDBReader(image_lmdb) as reader:
        keys = reader.keys()
    with LMDBWriter(out, overwrite=True) as writer:
        for key in keys:
            name = key.decode("utf-8").split("_", 1)[1]
            if name not in scores:
                raise DataError(f"{image_lmdb}: key {key.decode()} has no teacher score")
            p_neg, p_pos = scores[name]
            datum = caffe_pb2.Datum(channels=2, height=1, width=1, label=int(p_pos > p_neg))
            datum.float_data.extend([p_neg, p_pos])
            writer.put(key, datum.SerializeToString())
    return len(keys)


def _in_phase(layer: caffe_pb2.LayerParameter, phase: int) -> bool:
    return any(r.HasField("phase") and r.phase == phase for r in layer.include)


def soften(net: caffe_pb2.NetParameter, soft_source: Path) -> caffe_pb2.NetParameter:
    """The TRAIN phase of a train_val net reads soft labels and uses SoftmaxCrossEntropyLoss (see module)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    data = [
        i for i, layer in enumerate(out.layer) if layer.type == "Data" and _in_phase(layer, caffe_pb2.TRAIN)
    ]
    losses = [i for i, layer in enumerate(out.layer) if layer.type == "SoftmaxWithLoss"]
    if len(data) != 1 or len(losses) != 1:
        raise NetError(f"net {net.name!r}: expected one TRAIN Data layer and one SoftmaxWithLoss to soften")
    train_data, loss = out.layer[data[0]], out.layer[losses[0]]
    if train_data.data_param.rand_skip:
        raise NetError(f"layer {train_data.name!r}: rand_skip would misalign the soft labels")
    soft_data = caffe_pb2.LayerParameter(name=SOFT_TOP, type="Data", top=[SOFT_TOP])
    soft_data.include.add(phase=caffe_pb2.TRAIN)
    soft_data.data_param.source = str(soft_source)
    soft_data.data_param.batch_size = train_data.data_param.batch_size
    soft_data.data_param.backend = caffe_pb2.DataParameter.LMDB
    soft_loss = caffe_pb2.LayerParameter(name=loss.name, type="SoftmaxCrossEntropyLoss", top=list(loss.top))
    soft_loss.bottom.extend([loss.bottom[0], SOFT_TOP])
    soft_loss.include.add(phase=caffe_pb2.TRAIN)
    if loss.include or loss.exclude:
        raise NetError(f"layer {loss.name!r}: a loss restricted by phase cannot be softened")
    loss.include.add(phase=caffe_pb2.TEST)
    layers = list(out.layer)
    layers.insert(data[0] + 1, soft_data)
    layers.append(soft_loss)
    if len(train_data.top) > 1:  # the hard label is unused in TRAIN: silence it, or it becomes a net output
        silence = caffe_pb2.LayerParameter(name="silence_label", type="Silence", bottom=[train_data.top[1]])
        silence.include.add(phase=caffe_pb2.TRAIN)
        layers.append(silence)
    del out.layer[:]
    out.layer.extend(layers)
    return out


class StudentRecipe:
    """Delegates to the base recipe (``extra['distill']['base']``) and softens its train_val when asked."""

    def _base(self, cfg: FoldConfig):
        return get_recipe(cfg.extra["distill"]["base"])

    def image_size(self, cfg: FoldConfig) -> int:
        return self._base(cfg).image_size(cfg)

    def train_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> Path:
        return self._base(cfg).train_mean(cfg, lmdb_dir)

    def eval_mean(self, cfg: FoldConfig, lmdb_dir: Path):
        return self._base(cfg).eval_mean(cfg, lmdb_dir)

    def init_weights(self, cfg: FoldConfig) -> Path | None:
        return self._base(cfg).init_weights(cfg)

    def write_files(self, cfg: FoldConfig, run: RunPaths, **paths) -> dict[str, Path]:
        from pixsent.formats.prototxt import read_net, write_prototxt

        files = self._base(cfg).write_files(cfg, run, **paths)
        d = cfg.extra["distill"]
        if d.get("soft"):
            soft_db = Path(paths["train_source"]).parent / SOFT_LMDB
            write_soft_lmdb(Path(paths["train_source"]), read_scores(Path(d["scores"])), soft_db)
            write_prototxt(soften(read_net(files["train_val"]), soft_db.resolve()), files["train_val"])
        return files


register_recipe(RECIPE, StudentRecipe())


def fold_config(cfg: StudentConfig) -> FoldConfig:
    """The pipeline FoldConfig of the student (subset ``weak``, fold 1, recipe ``distill``)."""
    scores = Path(cfg.labels) / "scores.tsv"
    extra: dict = {
        "distill": {
            "base": cfg.base,
            "soft": cfg.soft,
            "scores": str(scores.resolve()),
            "scores_file": file_fingerprint(scores),
        }
    }
    return FoldConfig(
        variant=cfg.variant,
        subset=SUBSET,
        init=cfg.init + ("-soft" if cfg.soft else ""),
        fold=1,
        runs=Path(cfg.runs),
        images=Path(cfg.images),
        splits=Path(cfg.labels) / "splits",
        lmdb_root=Path(cfg.lmdb_root),
        weights=cfg.weights,
        gpu=cfg.gpu,
        engine=cfg.engine,
        recipe=RECIPE,
        workers=1,
        progress=cfg.progress,
        echo=cfg.echo,
        extra=extra,
    )


def train_student(cfg: StudentConfig, fold_cfg: FoldConfig | None = None) -> dict:
    """Train and evaluate (on the weak hold-out) the student; returns the fold metrics plus its files."""
    from pixsent.formats.prototxt import read_solver
    from pixsent.workflow.pipeline import run_fold

    fcfg = fold_cfg or fold_config(cfg)
    train = Path(cfg.labels) / "splits" / f"{SUBSET}_agrees" / "test1" / "train.txt"
    if not train.is_file() or not train.read_text().strip():
        raise DataError(f"{train}: no weakly labelled training image (see {Path(cfg.labels) / 'report.md'})")
    metrics = run_fold(fcfg)
    run = fcfg.run_paths()
    weights = run.snapshot_model(int(read_solver(run.solver).max_iter))
    return metrics | {"weights": str(weights), "deploy": str(run.deploy), "run_dir": str(run.dir)}


def with_extra(fcfg: FoldConfig, **extra) -> FoldConfig:
    """A copy of ``fcfg`` with more recipe settings (e.g. ``demo=DemoConfig``)."""
    return replace(fcfg, extra=fcfg.extra | extra)
