"""Benchmark: stock kombu SQS vs the bundled transport, same emulator, same run."""
