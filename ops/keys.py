"""Redis keys of the ops app (grammar: core.keys)."""

from __future__ import annotations

from core.keys import key


def ops_samples_key() -> str:
    """STREAM, state role, no TTL (capped by XADD MAXLEN ~ SAMPLES_MAXLEN): dashboard samples.

    No TTL because a TTL belongs to the whole key: renewed by every XADD it would never
    fire, and left alone it would drop the whole day at once, just when the sampler has
    stopped and the operator wants to see what came before. MAXLEN bounds the size.
    Named under "core" (family core:ops), as when the dashboard lived there, so an
    upgrade keeps the day of samples and the family label /metrics reports.
    """
    return key("core", "ops", facet="samples")
