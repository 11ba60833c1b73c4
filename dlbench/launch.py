"""The ``dlbench`` console script: re-execute once with huge pages for XLA's scratch, then run the CLI.

Apart from :mod:`dlbench.cli` so that the re-exec (:func:`dlbench.host_memory.restart_with_huge_pages`)
happens before typer, rich and the commands' modules are imported: a command then starts in the time
of one interpreter start more (about 0.05 s), not two imports of the CLI.
"""

from __future__ import annotations

import sys


def run() -> None:
    from dlbench.host_memory import restart_with_huge_pages

    restart_with_huge_pages()
    from dlbench.cli import main

    sys.exit(main())
