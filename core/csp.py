"""django-csp's middleware, with the policy's header built once instead of per response."""

from __future__ import annotations

from dataclasses import asdict

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject
from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.http.response import HttpResponseBase

# Per-response overrides (django-csp's decorators); with none, and no nonce, every
# response gets the same header.
_OVERRIDES = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")

# (enforced, report-only) header values of a response without overrides: built on
# first use, dropped when a test changes the policy.
_built: tuple[str, str] | None = None


@receiver(setting_changed)
def _policy_changed(*, setting: str, **kwargs: object) -> None:
    global _built
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        _built = None


class CSPMiddleware(DjangoCSPMiddleware):
    """Kestrel's policy allows its scripts by hash, so without a nonce or a view's own
    policy the header is one fixed string: building it took ~75 µs a response."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, a) for a in _OVERRIDES):
            return super().process_response(request, response)
        if response.status_code in (404, 500) and settings.DEBUG:
            return response  # Django's debug pages, as django-csp leaves them
        global _built
        if _built is None:
            enforced = build_policy(**asdict(self.get_policy_parts(request=request, response=response)))
            report_only = build_policy(
                **asdict(self.get_policy_parts(request=request, response=response, report_only=True)), report_only=True
            )
            _built = (enforced, report_only)
        enforced, report_only = _built
        for header, value, exempt, config in (
            (HEADER, enforced, "_csp_exempt", "CONTENT_SECURITY_POLICY"),
            (HEADER_REPORT_ONLY, report_only, "_csp_exempt_ro", "CONTENT_SECURITY_POLICY_REPORT_ONLY"),
        ):
            prefixes = tuple((getattr(settings, config, None) or {}).get("EXCLUDE_URL_PREFIXES") or ())
            if (
                value
                and header not in response
                and getattr(response, exempt, False) is False
                and not request.path_info.startswith(prefixes)
            ):
                response[header] = value
        # As django-csp does: a nonce asked for once the header is written raises.
        # django-csp's own attribute, which HttpRequest's stubs do not declare.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)  # type: ignore[attr-defined]
        return response
