# Benchmarks: `make bench` runs the LMDB build benchmark (prerequisite bench-lmdb, mk/data.mk) and then the
# engine benchmark, which merges its section into bench/report.json and regenerates bench/report.md.
BENCH_ARGS ?=

.PHONY: bench-engine

bench: setup ## benchmarks (LMDB build, engine train/deploy vs sgemm peak and plain PyTorch) -> bench/report.{json,md}
	$(PY) bench/bench_engine.py $(BENCH_ARGS)

bench-engine: setup ## engine benchmark only (BENCH_ARGS=--quick for a short run)
	$(PY) bench/bench_engine.py $(BENCH_ARGS)
