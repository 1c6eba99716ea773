"""What drives the engine from outside: load tests and benchmarks."""
