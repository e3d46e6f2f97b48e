"""Runs `launch/main.py` with its arguments and prints, as the last line of stderr, how JAX's persistent
compilation cache answered: {"hits": loads from the cache, "writes": programs compiled and written}.

    python tests/cache_events.py --config=... [flags]

The counts come from JAX's public monitoring events (`jax.monitoring.register_event_listener`).
"""

import atexit
import collections
import json
import os
import runpy
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "writes"}
counts = collections.Counter({name: 0 for name in EVENTS.values()})


def listen(event: str, **kwargs) -> None:
  if event in EVENTS:
    counts[EVENTS[event]] += 1


jax.monitoring.register_event_listener(listen)
atexit.register(lambda: print(json.dumps(dict(counts)), file=sys.stderr))
sys.argv = [os.path.join(REPO, "launch", "main.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
