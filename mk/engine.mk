# Engine: Caffe's command line on pixsent (tools/caffe) and its tests.
.PHONY: test-solver caffe-golden-run

test-solver: setup ## solver, log parser and caffe CLI tests (golden runs included)
	$(PY) -m pytest -q tests/test_solver_units.py tests/test_solver_golden.py tests/test_logparse.py tests/test_caffe_cli.py

caffe-golden-run: setup ## re-run the golden SGD training in /tmp/pixsent-golden-run with tools/caffe
	rm -rf /tmp/pixsent-golden-run && mkdir -p /tmp/pixsent-golden-run
	cp -r $(SHARED)/golden/solver_run $(SHARED)/golden/lmdb $(SHARED)/golden/mean.binaryproto /tmp/pixsent-golden-run/
	cd /tmp/pixsent-golden-run/solver_run && rm -f snap_iter_* && $(CURDIR)/tools/caffe train -solver solver.prototxt -weights init.caffemodel

.PHONY: faithfulness
faithfulness: setup ## worst error of pixsent vs real Caffe on every golden comparison -> bench/faithfulness.{json,md}
	$(PY) bench/faithfulness.py --golden $(SHARED)/golden --out bench 2>/dev/null
