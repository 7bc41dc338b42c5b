# The paper end to end: `make fold3 VARIANT=fc7-2`, `make cv SUBSET=four`, `make paper`, `make demo`, `make table`.
VARIANT ?= fc8_twitter
SUBSET ?= five
INIT ?= caffenet
GPU ?=
ENGINE ?= pixsent
DATA ?=
MIRROR ?=
RUNS ?= runs
FOLDS ?= 5
PAPER_ARGS = --variant $(VARIANT) --subset $(SUBSET) --init $(INIT) --engine $(ENGINE) --runs $(RUNS) \
	$(if $(GPU),--gpu $(GPU)) $(if $(DATA),--data $(DATA)) $(if $(MIRROR),--mirror $(MIRROR))
PAPER_PY = PYTHONPATH=$(CURDIR) $(PY) -m pixsent

.PHONY: fold1 fold2 fold3 fold4 fold5 cv paper demo table

fold1 fold2 fold3 fold4 fold5: setup ## train and evaluate fold N (VARIANT SUBSET INIT GPU ENGINE DATA MIRROR)
	$(PAPER_PY) fold $(subst fold,,$@) $(PAPER_ARGS)

cv: setup ## all 5 folds of VARIANT/SUBSET/INIT, then mean ± std
	$(PAPER_PY) cv --folds $(FOLDS) $(PAPER_ARGS)

paper: setup ## every configuration of Tables 2, 4, 5, 6 (cached), then the tables
	$(PAPER_PY) paper --folds $(FOLDS) $(PAPER_ARGS)

demo: setup ## the pipeline on generated data with a small net: data, run folders, table.md and curves.png in demo/
	$(PAPER_PY) demo --out $(or $(DEMO_OUT),demo)

table: setup ## the paper's tables beside ours (FORMAT=md|csv)
	$(PAPER_PY) table --runs $(RUNS) --format $(or $(FORMAT),md)
