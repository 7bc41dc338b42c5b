# Cross-modal distillation (Serra et al. 2023): `make distill-demo`, `make distill-eval LABELS=dir DATA=dir`.
DISTILL_PY = PYTHONPATH=$(CURDIR) $(PY) -m pixsent distill
LABELS ?= runs/distill/labels
DISTILL_RUNS ?= runs/distill

.PHONY: distill-demo distill-eval

distill-demo: setup ## generated posts -> VADER weak labels -> student -> 5-fold benchmark table (CPU, minutes)
	$(DISTILL_PY) demo --out $(RUNS)/distill-demo

distill-eval: setup ## evaluate the student trained on LABELS on five/four/three-agree, 5 folds, +/- fine-tuning
	$(DISTILL_PY) eval --labels $(LABELS) --runs $(DISTILL_RUNS) --variant $(VARIANT) --init $(INIT) \
		$(if $(DATA),--data $(DATA)) $(if $(MIRROR),--mirror $(MIRROR)) $(if $(GPU),--gpu $(GPU)) \
		$(if $(SOFT),--soft)
