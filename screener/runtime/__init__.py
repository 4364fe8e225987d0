"""The function runtime: one handler signature, two transport adapters (JetStream and HTTP)."""
