"""Policies: pure functions of metrics, settings and a clock. No I/O, no processes, so they are
tested with a fake clock and replayed on traces by the simulator in bench/."""
