# NATS with JetStream (file storage on a volume) and its monitoring port 8222, which KEDA's
# nats-jetstream scaler reads (/jsz). One server: the streams are created with one replica.
resource "helm_release" "nats" {
  name             = "nats"
  namespace        = var.namespace
  create_namespace = true
  repository       = "https://nats-io.github.io/k8s/helm/charts/"
  chart            = "nats"
  version          = var.chart_version
  wait             = true

  values = [yamlencode({
    config = {
      jetstream = {
        enabled = true
        fileStore = {
          enabled = true
          pvc = {
            enabled = true
            size    = var.storage_size
          }
        }
      }
      monitor = {
        enabled = true
        port    = 8222
      }
    }
    container = {
      merge = {
        resources = {
          requests = { cpu = "250m", memory = "512Mi" }
          limits   = { memory = "2Gi" }
        }
      }
    }
    natsBox = {
      enabled = true
    }
  })]
}
