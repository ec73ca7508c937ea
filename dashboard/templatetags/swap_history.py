"""`{% load swap_history %}`: swap rows as the history shows them (dashboard.history)."""

from __future__ import annotations

from django import template

from dashboard import history

register = template.Library()
register.filter("swap_rows", history.swap_rows)
