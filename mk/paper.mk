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
# BATCH: TRAIN images per pass (default 256, the paper's); ITER_SIZE: passes accumulated per update (Caffe's
# iter_size; epochs count BATCH x ITER_SIZE images, so BATCH=64 ITER_SIZE=4 has the solver of 256 in less
# memory); MAX_ITER: cap training for a smoke run (recorded as capped; a later call without it trains on).
BATCH ?=
ITER_SIZE ?=
MAX_ITER ?=
PAPER_ARGS = --variant $(VARIANT) --subset $(SUBSET) --init $(INIT) --engine $(ENGINE) --runs $(RUNS) \
	$(if $(GPU),--gpu $(GPU)) $(if $(DATA),--data $(DATA)) $(if $(MIRROR),--mirror $(MIRROR)) \
	$(if $(BATCH),--batch $(BATCH)) $(if $(ITER_SIZE),--iter-size $(ITER_SIZE)) \
	$(if $(MAX_ITER),--max-iter $(MAX_ITER)) $(if $(SNAPSHOT),--snapshot $(SNAPSHOT))
PAPER_PY = PYTHONPATH=$(CURDIR) $(PY) -m pixsent

.PHONY: fold1 fold2 fold3 fold4 fold5 cv paper demo table

fold1 fold2 fold3 fold4 fold5: setup
	$(PAPER_PY) fold $(subst fold,,$@) $(PAPER_ARGS)

# Listed by `make help` as fold%; only fold1..fold5 exist (the explicit rule above wins for them).
fold%: ## foldN, N=1..5: train and evaluate fold N (VARIANT SUBSET INIT GPU ENGINE DATA MIRROR; BATCH=256 ITER_SIZE=1 MAX_ITER=N)
	@echo "make: no target $@: the folds are fold1 ... fold5" >&2; exit 2

cv: setup ## all 5 folds of VARIANT/SUBSET/INIT, then mean ± std (same knobs as foldN, e.g. BATCH=64 ITER_SIZE=4)
	$(PAPER_PY) cv --folds $(FOLDS) $(PAPER_ARGS)

paper: setup ## every configuration of Tables 2, 4, 5, 6 (cached), then the tables (BATCH ITER_SIZE MAX_ITER as foldN)
	$(PAPER_PY) paper --folds $(FOLDS) $(PAPER_ARGS)

demo: setup ## the pipeline on generated data with a small net: data, run folders, table.md and curves.png in demo/
	$(PAPER_PY) demo --out $(or $(DEMO_OUT),demo)

table: setup ## the paper's tables beside ours (FORMAT=md|csv, TABLES=2,3,4,5,6)
	$(PAPER_PY) table --runs $(RUNS) --format $(or $(FORMAT),md) $(if $(TABLES),--tables $(TABLES))
