output "host" {
  description = "Redis service host."
  value       = "redis-master.${var.namespace}.svc.cluster.local"
  depends_on  = [helm_release.redis]
}
