"""CloudEvents: typed payloads, constructors and the NATS and HTTP bindings."""
