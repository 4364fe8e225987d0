"""The edge: REST and WebSocket gateway, its security, the fan-out and the dashboard."""
