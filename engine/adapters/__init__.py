"""Adapters to systems we do not own: core banking and the SMS gateway.

Each is a small class over one `aiohttp.ClientSession` with a time-out on every
call, behind a Protocol so tests and other deployments can put another
transport in its place. They never retry: what to do with an unclear answer is
the relay's decision (inquire, never resend).
"""
