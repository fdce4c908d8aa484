"""The HTTP health probe: one GET of the health path on the address Caddy will dial."""

import http.client


class HttpProber:
    """Implements swap.Prober. Returns None when healthy (2xx), else a short reason."""

    def check(self, address: str, path: str, timeout: float) -> str | None:
        host, _, port = address.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", path, headers={"User-Agent": "zdd-health", "Connection": "close"})
            response = conn.getresponse()
            response.read(65536)
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except ConnectionRefusedError:
            return "connection refused"
        except (OSError, http.client.HTTPException) as err:
            return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return None
        return f"HTTP {response.status}"
