"""The sidecar: tracking hits, reports in, admin API, dashboard and events out, over HTTP."""
