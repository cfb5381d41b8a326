from django.apps import AppConfig


class OpsConfig(AppConfig):
    """What operators read: /healthz, /metrics, the /ops dashboard and `manage.py redis_audit`.

    It reads the Redis toolkit's figures (core.instrumentation, core.metrics, core.redis)
    and RQ's; nothing in core or the product apps imports it.
    """

    name = "ops"
    verbose_name = "Kestrel ops (health, metrics, dashboard, Redis audit)"
