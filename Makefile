# The two commands the README promises:
#   make serve   install into .venv and run the service on embedded defaults
#   make test    install everything the tests need and run the whole suite (.ci/run calls this)
PY ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install install-dev serve test bench lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# scripts/one-opencv.sh after every install: the packages below pull two more OpenCV wheels
# that overwrite our cv2 (see the script).
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[mesh,body]'
	sh scripts/one-opencv.sh $(BIN)/python

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,mesh,torch,ray,body,milvus]'
	# face_recognition is the accuracy/speed peer; its own dependency is dlib from source, which
	# dlib-bin already provides, hence --no-deps.
	$(BIN)/pip install -q --no-deps face_recognition==1.3.0
	# timm is only the reference for our ViT in tests; torchvision from the index does not import
	# beside the pinned CPU torch, and timm's ViT code never uses it.
	$(BIN)/pip install -q --no-deps timm==1.0.31
	sh scripts/one-opencv.sh $(BIN)/python
	bash scripts/install-test-deps.sh

serve: install
	$(BIN)/identity serve

# Lint first (ruff, formatting, mypy), then the whole suite: CI runs exactly this.
test: install-dev lint
	$(BIN)/pytest

# Every benchmark in bench/, each printing its markdown table (tens of minutes on 2 cores; the
# 1M-vector search rows alone take about half of it). bench/api.py starts its own service on
# loopback, with its own embedded Postgres (docs/service.md).
bench: install-dev
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/quality.py --clean
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/reid.py
	$(BIN)/python bench/search.py

lint:
	$(BIN)/ruff check identity services models bench tests migrations scripts
	$(BIN)/ruff format --check identity services models bench tests migrations scripts
	$(BIN)/mypy identity services
