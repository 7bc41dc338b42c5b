# The paper's analysis tools: Table 3 layer probes and Figure 7 sentiment maps.
# `make layers RUN=runs/five/fc8_twitter-caffenet`, `make maps IMAGES="a.jpg b.jpg" WEIGHTS=..._conv.caffemodel`
.PHONY: layers maps surgery bench-layers

RUN ?= runs/$(or $(SUBSET),five)/fc8_twitter-caffenet
LAYERS_IMAGES ?= data/twitter/images
MAPS_WEIGHTS ?= $(WEIGHTS)
MAPS_OUT ?= maps
SIZE ?= 451

layers: setup ## Table 3: linear SVM / softmax probes on every layer of RUN (5 folds)
	$(PY) -m pixsent layers --run $(RUN) --subset $(or $(SUBSET),five) --images $(LAYERS_IMAGES) \
		$(if $(MODEL),--model $(MODEL)) --json $(RUN)/table3.json --timings $(RUN)/table3_timings.json

bench-layers: setup ## `pixsent layers` at the paper's scale (880 images, 13 layers, 5 folds; BENCH_ARGS=--quick)
	$(PY) bench/bench_layers.py $(BENCH_ARGS)

maps: setup ## Figure 7: sentiment maps of IMAGES with WEIGHTS (a _conv.caffemodel or a trained one + MODEL)
	$(PY) -m pixsent maps $(IMAGES) --weights $(MAPS_WEIGHTS) $(if $(MODEL),--model $(MODEL)) \
		--size $(SIZE) --out $(MAPS_OUT) --grid $(MAPS_OUT)/grid.png

surgery: setup ## fully convolutional twin of WEIGHTS + MODEL into OUT
	$(PY) -m pixsent surgery --weights $(WEIGHTS) --model $(MODEL) --out $(or $(OUT),$(MAPS_OUT)) --size $(SIZE)
