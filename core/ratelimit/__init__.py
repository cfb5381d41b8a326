"""Rate limiting: policies as data in settings, decided per request by one Lua script.

policies: a policy's fields and the paths' grammar. identity: whom a request counts as.
script: the counters' keys and the check (one EVALSHA, all or nothing). guard: the one
extension point, an extra check of some keys decided in the same script call.
middleware: RateLimitMiddleware, the RateLimit fields and the 429.
"""
