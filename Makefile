# The two commands: `make run` and `make test`. Everything else is a step of them.
SHELL := /bin/bash
PY := .venv/bin/python
CHECKED := engine ledger sharding
# The engine assumes production unless told: everything here is the local stack.
export ENGINE_ENV ?= dev

.PHONY: run test up down venv stack migrate demo lint typecheck pytest reliability bench bench-scale bench-eod load seed clean

run: venv stack migrate demo          ## set up everything and serve on 127.0.0.1:8080 (Ctrl-C stops)
	ENGINE_ENV=dev ops/engine.sh start fake-core fake-sms fake-bureau relay
	ENGINE_ENV=dev $(PY) -m engine serve

# Lint and types run beside the suite (mypy's cold start is a minute of one core, the
# suite waits on its stack much of the time): `make test` stays well inside 15 minutes.
test: venv stack migrate              ## set up everything and run every check and test
	$(MAKE) --no-print-directory -j2 lint pytest
	@echo "make test: all checks passed"

up: venv stack migrate demo           ## start the stack, fakes, engine, relay, Prometheus in the background
	ENGINE_ENV=dev ops/engine.sh start
	ops/prometheus.sh up

down:                                 ## stop everything the project started
	-ops/prometheus.sh down
	-ops/engine.sh stop
	ops/stack.sh down

venv:
	ops/bootstrap.sh

stack:
	ops/stack.sh up

migrate: venv stack
	$(PY) -m engine migrate

demo: migrate
	ENGINE_ENV=dev $(PY) -m engine demo load

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict $(CHECKED)

# The suite starts its own engine, relay and fakes. A relay left by `make up` would
# carry out the suite's outbox rows against the other fakes: stop what `make up` started.
pytest: venv stack migrate
	ops/engine.sh stop
	ENGINE_ENV=test $(PY) -m engine demo load
	ENGINE_ENV=test $(PY) -m pytest -q -p no:cacheprovider

# The reliability battery at full scale (RELIABILITY.md): ten kills each, 2,200 generated
# cases, every proxy fault, longer bursts; `make test` runs the same files at a fast scale.
# Each test runs on databases, fakes and a Redis of its own; the shard test stops the
# stack's server 1 and starts it again. Results: .run/reliability/results.jsonl.
RELIABILITY_TESTS := tests/test_reliability_faults.py tests/test_reliability_crash.py \
	tests/test_reliability_redis.py tests/test_reliability_shard.py \
	tests/test_reliability_stateful.py tests/test_api_schemathesis.py
reliability: venv stack migrate      ## the reliability battery at full scale (about 15 min)
	ops/engine.sh stop
	RELIABILITY=full ENGINE_ENV=test $(PY) -m pytest -q -p no:cacheprovider --durations=10 $(RELIABILITY_TESTS)

bench: seed                           ## pgbench baseline, drawdown and repayment throughput, the calculator
	$(PY) -m loadtest.bench_schedule
	$(PY) -m loadtest.bench_api --append

bench-scale: up                       ## make bench's steps 2-3 again with 1,000,000 customers / 4,000,000 loans seeded (~7 min, ~19 GB)
	$(PY) -m loadtest seed --customers 1000000 --loans-per-customer 4
	$(PY) -m loadtest.bench_api --label "1,000,000 customers / 4,000,000 loans seeded" --append

bench-eod: up                         ## the day-end over the bench-scale loans (1,000,000 customers / 4,000,000 loans; seeded if missing) while drawdowns and repayments run at half saturation
	$(PY) -m loadtest seed --customers $${CUSTOMERS:-1000000} --loans-per-customer $${LOANS:-4} --due-today-every 28
	$(PY) -m loadtest.bench_eod --append

seed: up                              ## seed customers and loans for load runs (CUSTOMERS=, LOANS=)
	$(PY) -m loadtest seed --customers $${CUSTOMERS:-20000} --loans-per-customer $${LOANS:-4}

load: seed                            ## Locust against the local stack with the SLO gate
	mkdir -p .run/loadtest
	.venv/bin/locust -f loadtest/locustfile.py --headless -u $${USERS:-40} -r $${SPAWN:-10} \
	    -t $${DURATION:-60s} --host http://127.0.0.1:8080 \
	    --csv .run/loadtest/run --html .run/loadtest/report.html

clean: down
	ops/stack.sh purge
	rm -rf .run
