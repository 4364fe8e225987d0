# An OpenTelemetry collector receiving OTLP (HTTP 4318, gRPC 4317) from every screener process. It
# logs the spans (debug exporter); point an exporter at Jaeger or Tempo to keep them.
resource "helm_release" "otel_collector" {
  name             = "otel-collector"
  namespace        = var.namespace
  create_namespace = true
  repository       = "https://open-telemetry.github.io/opentelemetry-helm-charts"
  chart            = "opentelemetry-collector"
  version          = var.chart_version
  wait             = true

  values = [yamlencode({
    mode             = "deployment"
    fullnameOverride = "otel-collector"
    image = {
      repository = "otel/opentelemetry-collector-contrib"
    }
    config = {
      receivers = {
        otlp = {
          protocols = {
            grpc = { endpoint = "0.0.0.0:4317" }
            http = { endpoint = "0.0.0.0:4318" }
          }
        }
      }
      exporters = {
        debug = { verbosity = "basic" }
      }
      service = {
        pipelines = {
          traces = {
            receivers  = ["otlp"]
            processors = ["memory_limiter", "batch"]
            exporters  = ["debug"]
          }
        }
      }
    }
    resources = {
      requests = { cpu = "100m", memory = "256Mi" }
      limits   = { memory = "512Mi" }
    }
  })]
}
