PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow lint demo reproduce leaderboard soak

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'

test:
	$(BIN)/pytest -q

test-slow:
	$(BIN)/pytest -q -m slow

# Random SIGKILLs over many runs of a multi-benchmark toy evaluation; every record is checked (docs/reliability.md).
# ZSBENCH_SOAK_ITERATIONS=N (default 20, about 5 minutes); ZSBENCH_SOAK_SEED=S replays a seed.
soak:
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -m soak -rP tests/test_soak.py

lint:
	$(BIN)/ruff check benchmark methods tests tools

demo:
	$(BIN)/zsbench demo

# Runs every published entry whose weights and data are here; writes leaderboard/REPRODUCTION.md and
# fails when a number is off by more than its tolerance. e.g. make reproduce REPRODUCE_ARGS="--device cuda"
reproduce:
	$(BIN)/zsbench reproduce $(REPRODUCE_ARGS)

# Regenerates the tables of leaderboard/README.md from the records in results/.
leaderboard:
	$(BIN)/zsbench leaderboard --results results --published --out leaderboard/README.md $(LEADERBOARD_ARGS)
