output "gateway_url" {
  description = "URL of the gateway's Knative route."
  value       = "http://gateway.${var.namespace}.${var.domain}"
  depends_on  = [kubernetes_manifest.object]
}
