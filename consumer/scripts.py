"""The consumer's Lua scripts, one file each under consumer/lua/, with a header naming every key they touch.

All of them carry `allow-oom`: what a consumer writes is small and bounded (leases, fingerprints, counters,
dead letters), and it is what lets a full Redis drain, so it must not be refused for memory.
"""

from __future__ import annotations

from importlib.resources import files

from redis.commands.core import Script

from shared.redis_client import Client
from shared.redis_errors import remember_script


def load(client: Client, name: str) -> Script:
    """Register consumer/lua/NAME.lua; redis-py loads it again by itself when Redis answers NOSCRIPT."""
    source = (files("consumer") / "lua" / f"{name}.lua").read_text()
    remember_script(f"consumer/lua/{name}.lua", source)
    return client.register_script(source)
