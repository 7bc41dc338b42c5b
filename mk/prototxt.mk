# The paper's prototxts (pixsent/recipes/paper/prototxt_gen.py); committed under prototxt/.
SUBSET ?= five

.PHONY: prototxt prototxt-all prototxt-check

prototxt: setup ## regenerate prototxt/ (SUBSET=five|four|three|all, default five)
	$(PY) -m pixsent prototxt --subset $(SUBSET)

prototxt-all: setup ## regenerate prototxt/ for all three subsets
	$(PY) -m pixsent prototxt --subset all

prototxt-check: setup ## fail when prototxt/ differs from what the generator makes
	$(PY) -m pixsent prototxt --subset $(SUBSET) --check
