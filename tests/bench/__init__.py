"""Benchmarks (`make bench`): SMTP throughput and latency, tracking HTTP, admin queries at scale."""
