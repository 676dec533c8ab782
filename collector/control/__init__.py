"""Decisions without I/O: the rate limiter, the retry policy and its quota, endpoint health.
No aiohttp; time and randomness are passed in. Imports config/ and the leaves."""
