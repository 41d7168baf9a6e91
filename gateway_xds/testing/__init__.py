"""Test support shared by unit tests, real-Envoy tests and benchmarks: ADS clients, an Envoy runner,
upstream servers and a bounded load loop."""
