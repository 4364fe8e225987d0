locals {
  host = "nats.${var.namespace}.svc.cluster.local"
}

output "client_url" {
  description = "NATS client URL."
  value       = "nats://${local.host}:4222"
  depends_on  = [helm_release.nats]
}

output "monitor_url" {
  description = "NATS monitoring URL (http)."
  value       = "http://${local.host}:8222"
  depends_on  = [helm_release.nats]
}

output "monitor_endpoint" {
  description = "host:port of the monitoring port, as KEDA's natsServerMonitoringEndpoint wants it."
  value       = "${local.host}:8222"
  depends_on  = [helm_release.nats]
}
