output "host" {
  description = "PostgreSQL service host."
  value       = "postgresql.${var.namespace}.svc.cluster.local"
  depends_on  = [helm_release.postgresql]
}
