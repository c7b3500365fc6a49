"""Developer scripts: the demo and the local-cluster launcher the tests and benchmarks share."""
