"""The one way to open an aiohttp session: every HTTP client of the collector (the API, the
downloads, credential sources, the Pushgateway push) gets the same rules from here.

- the bytes received are the bytes served: `Accept-Encoding: identity`, no decompression;
- our User-Agent;
- timeouts per phase, never a total (a download may rightly take an hour: aiohttp#2249);
- proxies from the environment (`collector.net.proxies`), on only when one is set, so that
  ~/.netrc stays unread otherwise; a caller that picks its proxy per request (credential
  sources, which must never proxy link-local addresses) passes `proxies=False`.
"""

from __future__ import annotations

import aiohttp

from collector import __version__
from collector.net.proxies import environment_proxies

USER_AGENT = f"collector/{__version__}"
# aiohttp's default header limit is 8190 bytes; IAM tokens travel in a header and are several KiB.
MAX_FIELD_SIZE = 64 * 1024


def open_session(
    *,
    connect_timeout: float,
    read_timeout: float | None,
    connections: int = 100,
    proxies: bool = True,
) -> aiohttp.ClientSession:
    """A session to use in `async with`. `connections` bounds its pool; `read_timeout` is the
    longest silence a response may keep (None: none)."""
    # First: the proxy variables may be refused, before anything needs closing.
    trust_env = environment_proxies() if proxies else False
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout),
        auto_decompress=False,
        headers={"Accept-Encoding": "identity", "User-Agent": USER_AGENT},
        max_field_size=MAX_FIELD_SIZE,
        trust_env=trust_env,
    )
