"""What an operator watches: metrics (``GET /metrics``), logs with request and run ids,
and the readiness check (``GET /readyz``). See docs/metrics.md."""
