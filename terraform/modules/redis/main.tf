# Redis, standalone: the functions' hot state (rolling windows, rule state) and the gateway's
# fan-out. Its password comes from the existing Secret; Terraform never sees it.
resource "helm_release" "redis" {
  name       = "redis"
  namespace  = var.namespace
  repository = "oci://registry-1.docker.io/bitnamicharts"
  chart      = "redis"
  version    = var.chart_version
  wait       = true

  values = [yamlencode({
    architecture = "standalone"
    auth = {
      enabled                   = true
      existingSecret            = var.secret_name
      existingSecretPasswordKey = "redis-password"
    }
    master = {
      persistence = {
        enabled = false
      }
      resources = {
        requests = { cpu = "100m", memory = "256Mi" }
        limits   = { memory = "1Gi" }
      }
    }
  })]
}
