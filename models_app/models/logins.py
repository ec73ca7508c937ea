"""Failed-login windows: shared by every web process through the database."""

from __future__ import annotations

from django.db import models


class LoginFailures(models.Model):
    """The failed logins of one account or one client address in its current window.

    `key` is `account:<digest>` or `address:<digest>` (a SHA-256 prefix: user names may be
    any text). The window opened at the first failure and ends at `ends_at`; a row whose
    window has ended counts for nothing and is replaced by the next failure.
    """

    key = models.CharField(max_length=48, unique=True)
    count = models.PositiveIntegerField(default=0)
    ends_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "login failures"
        verbose_name_plural = "login failures"

    def __str__(self) -> str:
        return f"{self.key}: {self.count} until {self.ends_at:%Y-%m-%d %H:%M:%S}"
