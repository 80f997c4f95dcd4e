"""``python -m sora_proxy.simulator``: serve the simulator in the foreground."""

from . import main

main()
