# Benchmarks: `make bench` runs the LMDB build benchmark (prerequisite bench-lmdb, mk/data.mk), the whole
# `caffe train` process benchmark and then the engine benchmark, whose issue-15 table reads the process's
# figures; each merges its section into bench/report.json and regenerates bench/report.md.
BENCH_ARGS ?=
BENCH_TRAIN_ARGS ?= $(filter --quick,$(BENCH_ARGS))

.PHONY: bench-engine bench-train-process

bench: setup ## benchmarks (LMDB build, caffe train process, engine train/deploy vs sgemm peak and plain PyTorch) -> bench/report.{json,md}
	$(PY) bench/bench_train_process.py $(BENCH_TRAIN_ARGS)
	$(PY) bench/bench_engine.py $(BENCH_ARGS)

bench-engine: setup ## engine benchmark only (BENCH_ARGS=--quick for a short run)
	$(PY) bench/bench_engine.py $(BENCH_ARGS)

bench-train-process: setup ## whole `caffe train` process, 10 CaffeNet b32 iterations from a Data layer (BENCH_TRAIN_ARGS=--quick: 1 process)
	$(PY) bench/bench_train_process.py $(BENCH_TRAIN_ARGS)
