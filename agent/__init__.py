"""zdd: zero-downtime Docker deployments on one server, behind Caddy, managed by systemd."""

__version__ = "0.1.0"
