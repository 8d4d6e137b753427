"""One notebook of a cohort run in its own process, its kernel started ahead: ``python -m research.launch``.

``research run`` starts this process before the notebook may run. It starts the kernel in
the project folder and imports the modules every notebook imports (silently: no cell, no
execution count, nothing in the notebook), then waits for one line on its standard input.
``go`` runs the notebook with papermill in that kernel, exactly as ``papermill`` would;
anything else (or the end of input) shuts the kernel down and exits 0. So the start of a
kernel, about 3 s of a notebook's time, overlaps the notebooks that run before it. The kernel
talks over Unix sockets in the folder ``$RESEARCH_KERNEL_SOCKETS`` (a new temporary folder when
unset), which the process removes when it ends.

Usage: python -m research.launch NOTEBOOK OUTPUT CWD PARAMETERS_YAML
Exit status: 0 when the notebook ran (or was not asked to), 1 when it failed (the error is
in the output notebook, or in this process's output when no cell ran).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

__all__ = ["WARM_UP", "main"]

sys.modules.setdefault("pyarrow.fs", None)  # papermill imports pyarrow.fs only for HDFS paths: a third of its start

#: What the kernel imports before its notebook runs: what every notebook's first cells import.
WARM_UP = "import research.notebook, research.steps, research.estimates, research.plots, matplotlib.pyplot"


async def _start_kernel(cwd: str, sockets: str):
    """A kernel started in ``cwd``, talking over Unix sockets in the folder ``sockets``, warmed up.

    Not TCP: a TCP port is chosen free and then bound by the kernel, and between the two
    another kernel starting at the same moment (the next notebooks', another cohort's) can
    take it, and the kernel dies ("Address already in use"). A socket file in a folder of
    this process's own cannot be taken.
    """
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        msg_id = kc.execute(WARM_UP, silent=True, store_history=False)
        while True:  # the reply to the warm-up; an import that fails only costs the notebook its head start
            reply = await kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        kc.stop_channels()
    return km


def main(argv: list[str]) -> int:
    import logging

    from jupyter_core.utils import run_sync

    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    notebook, output, cwd, parameters = argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    logging.getLogger("traitlets").setLevel(logging.ERROR)  # the warm-up client's closing notes are no news
    sockets = os.environ.get("RESEARCH_KERNEL_SOCKETS") or tempfile.mkdtemp(prefix="research-kernel-")
    try:
        return _run(notebook, output, cwd, parameters, run_sync(_start_kernel)(cwd, sockets))
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _run(notebook: str, output: str, cwd: str, parameters: str, km) -> int:
    """Wait for ``go``, run the notebook in the started kernel ``km``, shut the kernel down."""
    import yaml
    from jupyter_core.utils import run_sync

    try:
        if sys.stdin.readline().strip() != "go":
            return 0
        import papermill
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(notebook, output, parameters=yaml.safe_load(parameters) or {}, kernel_name="python3",
                                       progress_bar=False, cwd=cwd, km=km)
        except PapermillExecutionError as exc:  # the cell and its error are in the output notebook
            print(f"{type(exc).__name__}: {exc.ename}: {exc.evalue}", file=sys.stderr)
            return 1
        return 0
    finally:
        run_sync(km.shutdown_kernel)(now=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
