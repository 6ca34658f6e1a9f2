"""HTTP side of Mailstead: client autoconfiguration, Prometheus metrics and a health check.

``site.make_site(ctx)`` is the ``twisted.web`` factory the daemon binds for ``[http] listen``;
``autoconfig`` holds the pure document builders.
"""
