"""Allocates (and touches, so the pages are really taken) far more memory than its
ember.yaml declares: `resources: {memory: 256Mi}`, and 1 GiB by default.

Why it must fail: a replica runs in a memory cgroup limited to what its package declares, so
the kernel's OOM killer ends this replica alone at 256 MiB, long before the machine runs short
and its OOM killer picks a victim (the server, another tenant's replica). The prediction fails
saying "out of memory: limit 256 MiB", and a new replica serves the next one. `mib` small
enough to fit is a normal prediction.
"""

CHUNK_MIB = 16


def predict(mib: int = 1024) -> str:
    held = []
    for _ in range(mib // CHUNK_MIB):
        held.append(b"\xa5" * (CHUNK_MIB << 20))  # written, not just reserved
    return f"held {len(held) * CHUNK_MIB} MiB"
