"""The paper's recipe for the fold workflow: CaffeNet variants (prototxt_gen), weights and means from the
model registry, and ``run_paper`` over every configuration of the paper's tables."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pixsent.errors import DataError, NetError
from pixsent.workflow.pipeline import SHARED, FoldConfig, RunPaths, register_recipe, run_cv
from pixsent.zoo import registry as model_zoo


def run_paper(cfg: FoldConfig, folds: range = range(1, 6)) -> list[dict]:
    """Every configuration of Tables 2, 4, 5 and 6 (each cached), in the paper's order."""
    from dataclasses import replace

    from pixsent.recipes.paper import results

    return [run_cv(replace(cfg, subset=s, variant=v, init=i), folds) for s, v, i in results.configurations()]


class PaperRecipe:
    """CaffeNet variants of the paper: prototxts from pixsent.recipes.paper.prototxt_gen, weights from the
    model registry."""

    def claims_data(self, data: Path | None) -> bool:
        """The paper's recipe is the default: it takes any image folder (or none: the Twitter images)."""
        return True

    def config_from_args(self, args: argparse.Namespace, fold: int, gpu: str | None) -> FoldConfig:
        """The fold command's options as a FoldConfig; an unknown variant or subset is refused now, before
        any LMDB is built (not at the prototxt step)."""
        from pixsent.recipes.paper.variants import BACKBONE_VARIANTS, HEADS

        known = [*HEADS, *(v for v in BACKBONE_VARIANTS if v not in HEADS)]
        if args.variant not in known:
            raise NetError(f"--variant {args.variant}: unknown variant (known: {', '.join(known)})")
        if args.subset not in ("five", "four", "three"):
            raise NetError(f"--subset {args.subset}: unknown subset (known: five, four, three)")
        return FoldConfig(
            variant=args.variant,
            subset=args.subset,
            init=args.init,
            fold=fold,
            runs=args.runs,
            images=args.data,
            splits=args.splits,
            lmdb_root=args.lmdb,
            mirror=args.mirror,
            models=args.models,
            weights=args.weights,
            gpu=gpu,
            engine=args.engine,
            echo=not args.quiet,
            batch=args.batch or 256,
            iter_size=args.iter_size,
            max_iter_cap=args.max_iter,
            snapshot_every=args.snapshot,
        )

    def image_size(self, cfg: FoldConfig) -> int:
        return int(cfg.extra.get("image_size", 256))

    def _entry(self, cfg: FoldConfig):

        getter = getattr(model_zoo, "get", None) or getattr(model_zoo, "get_model", None)
        try:
            return getter(cfg.init) if getter else model_zoo.REGISTRY[cfg.init]
        except KeyError:
            raise DataError(f"unknown initialisation {cfg.init!r}; see `pixsent models list`") from None

    def train_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> Path | None:
        """The init model's mean as a binaryproto (the registry's: ILSVRC for CaffeNet-derived models, the
        Places205 mean from its archive for PlacesCNN; ILSVRC for a model not in the registry)."""
        explicit = cfg.extra.get("mean_file")
        if explicit:
            return Path(explicit).resolve()
        try:
            spec = self._entry(cfg).mean
        except DataError:
            spec = None
        if spec is not None and spec.values is not None:
            return None  # per-channel mean_value in the prototxt: no mean image
        if spec is not None and spec.npy is None:  # shipped with the model: models/<name> or MODELS/<name>
            for cand in (Path(spec.file), Path(cfg.models) / Path(spec.file).name):
                if cand.is_file():
                    return cand.resolve()
            raise DataError(
                f"mean {spec.file} of {cfg.init!r} not found (nor in {cfg.models}); "
                f"run `pixsent models fetch {cfg.init}` (or pass MIRROR=dir)"
            )
        path = Path("data/ilsvrc_2012_mean.binaryproto")
        if not path.exists():
            npy = next(
                (
                    p
                    for p in (
                        cfg.mirror and Path(cfg.mirror) / "ilsvrc_2012_mean.npy",
                        SHARED / "data/ilsvrc_2012_mean.npy",
                    )
                    if p and Path(p).exists()
                ),
                None,
            )
            if npy is None:
                raise DataError(f"{path} not found; run `pixsent data mean` (or pass MIRROR=dir)")
            from pixsent.formats.binaryproto import npy_to_binaryproto

            path.parent.mkdir(parents=True, exist_ok=True)
            npy_to_binaryproto(npy, path)
        return path.resolve()

    def eval_mean(self, cfg: FoldConfig, lmdb_dir: Path) -> np.ndarray | None:
        """Per-channel mean of the training mean image, as pycaffe users pass it to Classifier (the registry's
        per-channel values for a model that has no mean image)."""
        from pixsent.formats.binaryproto import read_mean

        mean_file = self.train_mean(cfg, lmdb_dir)
        if mean_file is None:
            return np.asarray(self._entry(cfg).mean.values, dtype=np.float32)
        return read_mean(mean_file).mean(axis=(1, 2))

    def _init_outputs(self, cfg: FoldConfig) -> int | None:
        """fc9_twitter keeps the init model's fc8: its width read from the initial caffemodel (the registry
        lacks it for some MVSO models, and --weights may hold another model); None elsewhere (registry)."""
        from pixsent.recipes.paper.variants import backbone_of

        if cfg.variant != "fc9_twitter" or backbone_of(cfg.init) is not None:
            return None  # a backbone's fc9_twitter reads its net's last output, whatever its width
        try:
            weights = self.init_weights(cfg)
        except DataError:
            return None  # training will report the missing weights; the registry's width is used meanwhile
        from pixsent.formats.caffemodel import read_caffemodel, weights_of

        fc8 = weights_of(read_caffemodel(weights), str(weights)).get("fc8")  # V1 upgraded: (N, K) weights
        if fc8 is None:
            raise NetError(
                f"{weights}: no layer 'fc8' with weights, which fc9_twitter keeps from its init model"
            )
        return int(fc8[0].shape[0])

    def init_weights(self, cfg: FoldConfig) -> Path | None:
        if cfg.weights is not None:
            if not Path(cfg.weights).is_file():
                raise DataError(f"{cfg.weights}: initialisation weights not found")
            return Path(cfg.weights).resolve()
        entry = self._entry(cfg)
        fname = getattr(entry, "file", None) or getattr(entry, "filename", None) or f"{cfg.init}.caffemodel"
        path = Path(cfg.models) / fname
        if not path.is_file() and cfg.mirror is not None:
            model_zoo.fetch(cfg.init, mirror=cfg.mirror, dest=cfg.models)
        if not path.is_file():
            raise DataError(
                f"pre-trained weights for {cfg.init!r} not found at {path}; "
                f"run `pixsent models fetch {cfg.init}` (or pass MIRROR=dir)"
            )
        return path.resolve()

    def write_files(
        self,
        cfg: FoldConfig,
        run: RunPaths,
        *,
        train_source: Path,
        test_source: Path,
        mean_file: Path,
        train_size: int,
        test_size: int,
    ) -> dict[str, Path]:
        from pixsent.recipes.paper.prototxt_gen import write_variant_files
        from pixsent.recipes.paper.variants import VariantConfig, backbone_of

        backbone_deploy = None
        if backbone_of(cfg.init) is not None:
            deploy = model_zoo.deploy_path(cfg.init, cfg.models)
            if not deploy.is_file() and cfg.weights is None and cfg.mirror is not None:
                self.init_weights(cfg)  # a model packed in an archive (open-nsfw) brings its deploy with it
            backbone_deploy = str(model_zoo.find_deploy(cfg.init, cfg.models, cfg.mirror))
        vcfg = VariantConfig(
            variant=cfg.variant,
            init=cfg.init,
            backbone_deploy=backbone_deploy,
            init_outputs=self._init_outputs(cfg),
            train_batch_size=cfg.batch,
            iter_size=cfg.iter_size,
            snapshot_every=cfg.snapshot_every,
        )
        return write_variant_files(
            vcfg,
            run.dir,
            train_source=train_source,
            test_source=test_source,
            mean_file=mean_file,
            snapshot_prefix=run.snapshot_prefix,
            train_size=train_size,
            test_size=test_size,
        )


def _variant_deploy(spec: dict, name: str, num_outputs: int | None):
    """Deploy net of a released fine-tuned model: the paper's variant ``spec["variant"]``."""
    from pixsent.recipes.paper import variants

    return variants.deploy(variants.VariantConfig(variant=spec["variant"]))


def _fullconv_deploy(spec: dict, name: str, num_outputs: int | None):
    """Deploy net of the released fully convolutional model (Figure 7)."""
    from pixsent.recipes.paper import variants

    return variants.fullconv_deploy()


register_recipe("paper", PaperRecipe())
model_zoo.register_deploy_generator("variant", _variant_deploy)
model_zoo.register_deploy_generator("fullconv", _fullconv_deploy)
