"""wsguard benchmarks: what the protection costs against a bare ``websockets`` server.

Run everything with ``python -m benchmarks`` (``make bench``): echo round trips and
handshakes per second against a bare server in alternating rounds, the per-message
pipeline in-process, memory per idle connection and the signature ReDoS check. The
table is printed with one PASS/FAIL line per target, and written as JSON to
``benchmarks/results/latest.json``. The targets are reported, never asserted.
"""
