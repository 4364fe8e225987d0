output "otlp_http_endpoint" {
  description = "OTLP/HTTP endpoint (SCREENER_OTEL_ENDPOINT)."
  value       = "http://otel-collector.${var.namespace}.svc.cluster.local:4318"
  depends_on  = [helm_release.otel_collector]
}
