"""Proxies from the environment: HTTPS_PROXY, HTTP_PROXY and NO_PROXY.

Both halves of collector's traffic follow the same variables, with the same rules: Python's
`urllib.request.getproxies` and `proxy_bypass`, which aiohttp uses, and requests too (it adds
CIDR ranges in NO_PROXY):

- ``https_proxy`` for https URLs, ``http_proxy`` for http ones; each in lower or upper case,
  lower case winning (an empty lower-case one turns the upper-case one off). As with
  requests, and unlike curl, upper-case ``HTTP_PROXY`` counts too, except in a CGI process.
- ``no_proxy``/``NO_PROXY``: ``*``, or a comma-separated list of host names, domains (``.corp``
  and ``corp`` both match ``api.corp``) and IP addresses, matched against the host without
  its port. CIDR ranges (``10.0.0.0/8``) are not understood: list the names instead.
- ``ALL_PROXY`` is not read, and a proxy is spoken to in plain http only (``CONNECT`` for https
  destinations, so it sees the host name, never a header or a byte of the exchange); an
  ``https://`` or ``socks5://`` proxy is refused up front (`environment_proxies`), where
  aiohttp would drop it with a log line and go direct, or fail obscurely.
- Link-local addresses (169.254.0.0/16, fe80::/10) are never proxied, whatever NO_PROXY says:
  the ECS metadata service and the CCE pod identity agent live there, answer only on the
  node's own link, and hand out credentials a proxy has no business seeing. A forgotten
  NO_PROXY entry must not send them through it.

Who applies them:

- the run's session (API calls and redirected downloads, `collector.run.runner`) through aiohttp's
  ``trust_env=True``, turned on only when a proxy is set (`environment_proxies`): aiohttp then
  picks the proxy per request, redirect targets included;
- the credential sources (IAM, pod identity, metadata: `collector.auth.http`) through
  `proxy_for`, per call, where the link-local rule is applied.

What ``trust_env`` brings besides, and why we accept it: aiohttp then also reads ``~/.netrc``
(or ``$NETRC``) for every request without credentials of its own, and sends a matching entry's
login as Basic auth, to the host it names (``machine``), or to any host (``default``); for
the proxy's host it becomes ``Proxy-Authorization``. Our API requests carry their own
credentials in other headers, and aiohttp refuses to combine an ``Authorization`` header (an
AK/SK signature) with a netrc login: a netrc entry for the API's host makes signed requests
fail, and one for an object-storage host adds a second credential a presigned URL refuses.
Credentials reach the proxy itself only as the user put them in the proxy's URL or a netrc
entry for the proxy; for an https endpoint everything else is inside the TLS tunnel, and for
a plain-http endpoint the proxy sees the request as any hop on the path would (the run
already warns that such an endpoint sends credentials in clear). Without a proxy set none of
this happens: ``trust_env`` stays off and netrc is never read; nor is its cost paid, since
aiohttp then resolves the proxy and looks netrc up in worker threads for every request
(about a third more CPU per server: a 3,000-server `collector run` against the simulator with
``HTTP_PROXY`` set and ``NO_PROXY`` covering it, against one without). A ``default`` entry, the one
that would touch every host, is warned about (`environment_proxies`); ``NETRC=/dev/null``
keeps netrc out entirely. Choosing the proxy ourselves instead would keep netrc out always,
but needs the API client to pass ``proxy=`` on every call; worth it if netrc ever bites.
"""

from __future__ import annotations

import ipaddress
import logging
import netrc
import os
import urllib.request

import yarl

from collector.errors import UsageError
from collector.log import ev

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")  # the destinations a proxy variable is read for
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_LINK_LOCAL_V6 = ipaddress.ip_network("fe80::/10")


def configured() -> dict[str, yarl.URL]:
    """The proxy for each destination scheme the environment names (``{"https": URL}``),
    checked: `UsageError` for a proxy collector cannot speak to."""
    found = urllib.request.getproxies()
    proxies = {}
    for scheme in SCHEMES:
        value = found.get(scheme)
        if value:
            proxies[scheme] = _checked(scheme, value)
    return proxies


def environment_proxies() -> bool:
    """Whether the run's session should take its proxies from the environment (aiohttp's
    ``trust_env``): only when a proxy is set, checked. See the module's docstring for netrc."""
    proxies = configured()
    if proxies:
        for scheme, url in proxies.items():
            log.info(
                "%s requests go through the proxy %s (%s_proxy)",
                scheme,
                shown(url),
                scheme,
                extra=ev("proxy", scheme=scheme, proxy=shown(url)),
            )
        _warn_netrc_default()
    return bool(proxies)


def proxy_for(url: yarl.URL) -> yarl.URL | None:
    """The proxy a request to `url` goes through, or None for a direct connection."""
    host = url.host
    if not host or is_link_local(host):
        return None
    proxies = configured()
    proxy = proxies.get(url.scheme)
    if proxy is None or urllib.request.proxy_bypass(host):
        return None
    return proxy


def is_link_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address in (_LINK_LOCAL_V4 if address.version == 4 else _LINK_LOCAL_V6)


def shown(url: yarl.URL) -> str:
    """The proxy's URL as logs and errors may show it: any login and password masked."""
    if url.user is None and url.password is None:
        return str(url)
    return str(url.with_user(None).with_password(None)).replace("://", "://***@", 1)


def _checked(scheme: str, value: str) -> yarl.URL:
    where = f"the {scheme} proxy (${scheme}_proxy or ${scheme.upper()}_PROXY)"
    try:
        url = yarl.URL(value.strip())
        host = url.host
    except (ValueError, TypeError):
        url, host = None, None
    if url is None or url.scheme != "http" or not host:
        # Not the value itself: it may hold a password.
        got = f"a {url.scheme}:// URL" if url is not None and url.scheme and host else "no http:// URL"
        raise UsageError(
            f"{where} is {got}".replace(" a https", " an https"),
            "collector speaks to proxies in plain http (CONNECT for https endpoints): give http://HOST:PORT",
        )
    return url


def _warn_netrc_default() -> None:
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return  # aiohttp finds no entry either
    if "default" in entries.hosts:
        log.warning(
            "%s has a default entry: with a proxy set, its login goes as Basic auth to every host "
            "collector talks to; set NETRC=/dev/null for collector to keep it out",
            path,
            extra=ev("netrc_default", path=path),
        )
