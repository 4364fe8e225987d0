output "gateway_url" {
  description = "URL of the gateway (REST, WebSocket and dashboard) through the Knative ingress."
  value       = module.screener.gateway_url
}

output "nats_url" {
  description = "NATS client URL inside the cluster."
  value       = module.nats.client_url
}

output "nats_monitor_url" {
  description = "NATS monitoring URL inside the cluster (KEDA reads /jsz here; so does screener scale-advice)."
  value       = module.nats.monitor_url
}

output "redis_host" {
  description = "Redis service host inside the cluster (the password is in the Secret)."
  value       = module.redis.host
}

output "postgres_host" {
  description = "PostgreSQL service host inside the cluster (the password is in the Secret)."
  value       = module.postgres.host
}

output "otel_collector_endpoint" {
  description = "OTLP/HTTP endpoint of the OpenTelemetry collector."
  value       = module.otel_collector.otlp_http_endpoint
}
