output "domain" {
  description = "DNS suffix of the Knative routes."
  value       = var.domain
  depends_on  = [kubernetes_manifest.serving]
}
