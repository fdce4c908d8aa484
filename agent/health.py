"""The HTTP health probe: one GET of the health path on the address Caddy will dial."""

import http.client

from .config import HealthCheck


class HttpProber:
    """Implements swap.Prober. Returns None when healthy (2xx, or one of health_status), else a short reason."""

    def check(self, address: str, health: HealthCheck) -> str | None:
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=health.timeout)
        headers = {"User-Agent": "zdd-health", "Connection": "close"}
        if health.host:
            headers["Host"] = health.host
        try:
            conn.request("GET", health.path, headers=headers)
            response = conn.getresponse()
            response.read(65536)
        except TimeoutError:
            return f"no answer within {health.timeout:g}s"
        except ConnectionRefusedError:
            return "connection refused"
        except (OSError, http.client.HTTPException) as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        finally:
            conn.close()
        if health.accepts(response.status):
            return None
        return f"HTTP {response.status}"
