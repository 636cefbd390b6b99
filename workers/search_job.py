"""Entry point of a search submitted to a Ray cluster:

    ray job submit --working-dir . -- python -m workers.search_job --config C.yaml [--db URL] [--resume]

Inside a Ray job, RAY_ADDRESS points at the cluster, so `flexiq search` joins it; run directly
without an address, the same code starts a local Ray on loopback. The arguments are those of
`flexiq search`.
"""

from __future__ import annotations

import sys

from flexiq_search.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
