PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow lint demo reproduce leaderboard

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

# Runs every published entry whose weights and data are here; writes leaderboard/REPRODUCTION.md and
# fails when a number is off by more than its tolerance. e.g. make reproduce REPRODUCE_ARGS="--device cuda"
reproduce:
	$(BIN)/zsbench reproduce $(REPRODUCE_ARGS)

# Regenerates the tables of leaderboard/README.md from the records in results/.
leaderboard:
	$(BIN)/zsbench leaderboard --results results --published --out leaderboard/README.md $(LEADERBOARD_ARGS)
