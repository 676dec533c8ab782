"""Decisions without I/O: the rate limiter, the retry policy and its quota, endpoint health.
No aiohttp; time and randomness are passed in. Imports only the leaves (errors, text, log)."""
