"""What the gateway says about itself: /healthz, /readyz, /openapi.json, /metrics, and the
watch on whether a flusher reads every stream this gateway writes."""
