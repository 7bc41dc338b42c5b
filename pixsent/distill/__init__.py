"""Cross-modal distillation ("The Emotions of the Crowd", Serra et al., ECAI 2023) in front of the pipeline.

posts (read, report bad lines) -> text (tweet normalisation) -> teachers (text -> (p_neg, p_pos)) ->
labelling (threshold, dedup, balance, lists and report) -> student (LMDBs, optional soft labels, training
by pixsent.workflow.pipeline) -> evaluation (five/four/three-agree, 5 folds, with and without fine-tuning).
``demo`` runs it all on generated posts.
"""
