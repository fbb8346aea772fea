"""Starting Ember's own processes in a package's environment: a replica worker
(`python -m ember.worker`) or a warm host (`python -m ember.worker.host`), each talking to the
runtime over one inherited socket."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import ember
from ember.packages.environment import Environment
from ember.packages.spec import PackageSpec
from ember.runtime.sandbox import Confinement


def worker_env(
    spec: PackageSpec,
    environment: Environment,
    outputs_dir: Path,
    confinement: Confinement | None = None,
) -> dict[str, str]:
    """The environment of a worker (or of a warm host, whose children inherit it). A
    sandboxed one keeps only the server's variables that are no secret of the server's, and
    writes its output files in its own scratch folder, from where the runtime takes them."""
    if confinement is not None:
        env = confinement.environment(dict(os.environ))
        outputs_dir = confinement.outputs
    else:
        env = dict(os.environ)
    env.update(
        EMBER_PACKAGE_SPEC=spec.model_dump_json(),
        EMBER_OUTPUTS_DIR=str(outputs_dir),
        PYTHONUNBUFFERED="1",
    )
    if "OMP_NUM_THREADS" not in env:
        # As many compute threads as the CPUs the replica asks for (torch would otherwise take
        # every core, and replicas side by side would fight over them).
        env["OMP_NUM_THREADS"] = str(max(1, int(spec.resources.cpu)))
    if environment.shared_with_ember:
        # Ember's own interpreter: make sure it finds this very copy of ember.
        source = str(Path(ember.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    else:
        # A model environment sees ember through its .pth link and nothing else of ours.
        env.pop("PYTHONPATH", None)
    return env


async def start_module(
    environment: Environment,
    module: str,
    fd: int,
    env: dict[str, str],
    stdout: int,
    stderr: int,
    confinement: Confinement | None = None,
) -> asyncio.subprocess.Process:
    """`python -m module` in the environment (in its sandbox, if given), inheriting `fd` (its
    channel to the runtime), in a session of its own: a terminal's Ctrl-C reaches Ember, which
    drains, not it."""
    argv = [str(environment.python), "-m", module]
    if confinement is not None:
        argv = confinement.command(argv)
    return await asyncio.create_subprocess_exec(
        *argv,
        pass_fds=(fd,),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
