"""``python -m edgeconv.cli``: the same command as the ``edgeconv`` console script."""

from edgeconv.cli import main

main()
