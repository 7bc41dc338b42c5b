# The paper's analysis tools: Table 3 layer probes and Figure 7 sentiment maps.
# `make layers RUN=runs/five/fc8_twitter-caffenet`, `make maps IMAGES="a.jpg b.jpg" WEIGHTS=..._conv.caffemodel`,
# `make layers-init PROBE_INIT=squeezenet-dc MODEL_MIRROR=../shared/models/squeezenet_dc` (off the shelf: no training),
# `make figure7 FIG7_RUN=runs/five/fc8_twitter-squeezenet-dc/fold1`.
.PHONY: layers layers-init maps surgery figure7 bench-layers

RUN ?= runs/$(or $(SUBSET),five)/fc8_twitter-caffenet
LAYERS_IMAGES ?= data/twitter/images
MAPS_WEIGHTS ?= $(WEIGHTS)
MAPS_OUT ?= maps
SIZE ?=

layers: setup ## Table 3: linear SVM / softmax probes on every layer of RUN (5 folds)
	$(PY) -m pixsent layers --run $(RUN) --subset $(or $(SUBSET),five) --images $(LAYERS_IMAGES) \
		$(if $(MODEL),--model $(MODEL)) --json $(RUN)/table3.json --timings $(RUN)/table3_timings.json

PROBE_INIT ?= squeezenet-dc
MODEL_MIRROR ?=
SPLITS ?= splits
TABLE3_DIR ?= results/table3
layers-init: setup ## Table 3 of registry model PROBE_INIT as it is (no training) -> $(TABLE3_DIR)/PROBE_INIT.{md,json}
	$(PY) -m pixsent layers --init $(PROBE_INIT) --models models $(if $(MODEL_MIRROR),--mirror $(MODEL_MIRROR)) \
		--subset $(or $(SUBSET),five) --images $(LAYERS_IMAGES) --splits $(SPLITS) \
		--json $(TABLE3_DIR)/$(PROBE_INIT).json --md $(TABLE3_DIR)/$(PROBE_INIT).md \
		--timings $(TABLE3_DIR)/$(PROBE_INIT)_timings.json

bench-layers: setup ## `pixsent layers` at the paper's scale (880 images, 13 layers, 5 folds; BENCH_ARGS=--quick)
	$(PY) bench/bench_layers.py $(BENCH_ARGS)

maps: setup ## Figure 7: sentiment maps of IMAGES with WEIGHTS (a _conv.caffemodel or a trained one + MODEL)
	$(PY) -m pixsent maps $(IMAGES) --weights $(MAPS_WEIGHTS) $(if $(MODEL),--model $(MODEL)) \
		$(if $(SIZE),--size $(SIZE)) --out $(MAPS_OUT) --grid $(MAPS_OUT)/grid.png

FIG7_RUN ?= runs/five/fc8_twitter-squeezenet-dc/fold1
# passed over: a test image of fold 1 whose caption holds a slur (not for a README figure)
FIG7_EXCLUDE ?= 57251215_463865158595383296_BmrpgvFIEAAgw7W.jpg
FIG7_OUT ?= docs/figure7.png
figure7: setup ## Figure 7 of a fine-tuned fold (FIG7_RUN): maps of 8 of its test images -> FIG7_OUT (a PNG grid)
	$(PY) -m pixsent maps --run $(FIG7_RUN) --test-images 8 --image-dir $(LAYERS_IMAGES) \
		$(if $(FIG7_EXCLUDE),--exclude $(FIG7_EXCLUDE)) --out $(MAPS_OUT)/figure7 --grid $(FIG7_OUT) \
		$(if $(FIG7_TITLE),--title "$(FIG7_TITLE)")

surgery: setup ## fully convolutional twin of WEIGHTS + MODEL into OUT
	$(PY) -m pixsent surgery --weights $(WEIGHTS) --model $(MODEL) --out $(or $(OUT),$(MAPS_OUT)) --size $(or $(SIZE),451)
