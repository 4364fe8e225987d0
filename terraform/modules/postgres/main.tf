# PostgreSQL for candles, bars, metrics snapshots, alert history, rules and webhooks. The schema is
# applied by the application's migrate Job, not here.
resource "helm_release" "postgresql" {
  name       = "postgresql"
  namespace  = var.namespace
  repository = "oci://registry-1.docker.io/bitnamicharts"
  chart      = "postgresql"
  version    = var.chart_version
  wait       = true

  values = [yamlencode({
    auth = {
      username       = "screener"
      database       = "screener"
      existingSecret = var.secret_name
      secretKeys = {
        adminPasswordKey = "postgres-password"
        userPasswordKey  = "password"
      }
    }
    primary = {
      persistence = {
        enabled = true
        size    = var.storage_size
      }
      resources = {
        requests = { cpu = "250m", memory = "512Mi" }
        limits   = { memory = "2Gi" }
      }
    }
  })]
}
