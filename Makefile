PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow lint demo

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'

test:
	$(BIN)/pytest -q

test-slow:
	$(BIN)/pytest -q -m slow

lint:
	$(BIN)/ruff check benchmark methods tests

demo:
	$(BIN)/zsbench demo
