output "namespace" {
  description = "Namespace of KEDA."
  value       = helm_release.keda.namespace
}
