# The two commands of the README. Both prepare the machine first (scripts/bootstrap.sh).
.PHONY: demo test lint

demo:
	@bash scripts/bootstrap.sh
	@.venv/bin/mimamori demo

test:
	@bash scripts/bootstrap.sh
	@bash scripts/check.sh

lint:
	@bash scripts/bootstrap.sh
	@bash scripts/check.sh --co -q >/dev/null
