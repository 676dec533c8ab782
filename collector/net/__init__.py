"""HTTP plumbing shared by every client: the aiohttp session's rules, proxies, and the one
translation of aiohttp's errors into ours. Imports control/ and the leaves."""
