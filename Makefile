# The two everyday commands. Each sets up .venv itself on a fresh machine.
#   make run    the shipped weights on the bundled test stack (test/input -> out/)
#   make test   the test suite (what CI runs), all but the image's tests
#   make test-fast   the tests not marked slow: under 90 s on 2 cores, for the edit-test loop
#   make test-image  build the container image and test it under the platform's contract (marker container): the
#                    tests start a docker engine where none answers (tools/docker_engine.sh), and skip saying why
#                    where none can be started; CI runs it after make test
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.requirements-installed

.PHONY: run test test-fast test-image venv

venv: $(STAMP)

# Reinstall whenever a requirements file changes; pip takes torch/torchvision from local disk where it can.
# requirements.txt is the container's runtime; requirements-dev.txt adds the evaluator, training and the tests.
$(STAMP): requirements.txt requirements-eval.txt requirements-train.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python process.py --input test/input --output out
	@cat out/multiple-mitotic-figure-classification.json

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m "not container"

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m "not slow and not container"

test-image: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q -m container
