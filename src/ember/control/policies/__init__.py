"""Policies: pure functions of metrics, settings and a clock. No I/O, no processes, so they are
tested with a fake clock and replayed on traces by `control/replay` (the simulator in bench/
and the cost advisor)."""
