"""The gateway's view of llmux inside one web process (`llmux_site.gateway.backend`'s
`GatewayBackend`, implemented over the database and the host bus), split by job."""

from models_app.adapters.gateway.activity_report import ActivityReport, capture_setting
from models_app.adapters.gateway.django_backend import DjangoGatewayBackend
from models_app.adapters.gateway.key_table import GatewayKeys, rate_window

__all__ = [
    "ActivityReport",
    "DjangoGatewayBackend",
    "GatewayKeys",
    "capture_setting",
    "rate_window",
]
