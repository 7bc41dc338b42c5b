# Data: the paper's split files, the Twitter images, per-fold LMDBs, the ILSVRC mean, the LMDB-build benchmark.
# MIRROR defaults to $(SHARED)/data when that folder exists (offline CI); `make splits MIRROR=` forces the network.
MIRROR ?= $(if $(wildcard $(SHARED)/data),$(SHARED)/data,)
SUBSET ?= five
FOLD ?= all
DATA ?= data
SOURCE ?= auto
PIXSENT_CMD ?= $(PY) -m pixsent
MIRROR_ARG = $(if $(MIRROR),--mirror $(MIRROR),)

.PHONY: splits data lmdb mean bench-lmdb

splits: setup ## fetch the paper's split files (five/four/three) into splits/, sha256-verified (MIRROR=dir)
	$(PIXSENT_CMD) splits fetch --subset all --dest splits $(MIRROR_ARG)
	$(PIXSENT_CMD) splits check splits

data: setup ## the 1269 Twitter images + ground truth into $(DATA)/twitter, each sha256-checked (SOURCE=auto|original|github, MIRROR=dir)
	$(PIXSENT_CMD) data fetch --dest $(DATA)/twitter --source $(SOURCE) --splits splits $(MIRROR_ARG)

lmdb: setup splits data ## build train/test LMDBs + mean of SUBSET (five) FOLD (1..5|all) into $(DATA)/lmdb (cached)
	$(PIXSENT_CMD) data lmdb --subset $(SUBSET) --fold $(FOLD) --images $(DATA)/twitter/images --splits splits --out $(DATA)/lmdb

mean: setup ## ILSVRC 2012 mean .npy -> $(DATA)/ilsvrc_2012_mean.binaryproto (MIRROR=dir)
	$(PIXSENT_CMD) data mean --dest $(DATA) $(MIRROR_ARG)

bench-lmdb: setup ## LMDB build images/s (500 JPEGs 500x375 -> 256x256, 1 and 2 workers) into bench/report.*
	$(PY) bench/bench_lmdb.py

bench: bench-lmdb
