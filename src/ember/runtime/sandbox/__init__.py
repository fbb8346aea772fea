"""The replica sandbox: bubblewrap for what a replica sees, cgroups for what it may use and
for ending everything it started (`confinement.py`, `layout.py`, `cgroups.py`)."""

from ember.runtime.sandbox.confinement import (
    SANDBOX_ENV,
    Confinement,
    Sandboxing,
    SandboxUnavailable,
    sandbox_wanted,
)

__all__ = ["SANDBOX_ENV", "Confinement", "SandboxUnavailable", "Sandboxing", "sandbox_wanted"]
