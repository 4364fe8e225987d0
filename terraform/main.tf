# The whole screener on one cluster: the platform (NATS with JetStream, KEDA, Knative Serving and
# Eventing with eventing-natss, Redis, PostgreSQL, an OpenTelemetry collector) and the application.
#
# kubernetes_manifest needs the CRDs of what it creates at plan time, so a fresh cluster takes two
# applies: first the platform (-target=module.nats -target=module.keda -target=module.knative
# -target=module.redis -target=module.postgres -target=module.otel_collector), then everything.

module "nats" {
  source = "./modules/nats"

  namespace     = var.nats_namespace
  chart_version = var.chart_versions.nats
  storage_size  = var.jetstream_storage_size
}

module "keda" {
  source = "./modules/keda"

  chart_version = var.chart_versions.keda
}

module "knative" {
  source = "./modules/knative"

  operator_chart_version      = var.chart_versions.knative_operator
  knative_version             = var.knative_version
  domain                      = var.domain
  eventing_natss_manifest_url = var.eventing_natss_manifest_url
}

module "redis" {
  source = "./modules/redis"

  namespace     = var.namespace
  chart_version = var.chart_versions.redis
  secret_name   = var.secret_name
}

module "postgres" {
  source = "./modules/postgres"

  namespace     = var.namespace
  chart_version = var.chart_versions.postgresql
  secret_name   = var.secret_name
  storage_size  = var.postgres_storage_size
}

module "otel_collector" {
  source = "./modules/otel_collector"

  chart_version = var.chart_versions.otel_collector
}

module "screener" {
  source = "./modules/screener"

  manifests_dir  = "${path.root}/.."
  namespace      = var.namespace
  image          = var.image
  secret_name    = var.secret_name
  replica_bounds = var.replica_bounds
  gateway_scale  = var.gateway_scale
  http_functions = var.http_functions
  config = {
    SCREENER_NATS_URL         = module.nats.client_url
    SCREENER_NATS_MONITOR_URL = module.nats.monitor_url
    SCREENER_OTEL_EXPORTER    = "otlp"
    SCREENER_OTEL_ENDPOINT    = module.otel_collector.otlp_http_endpoint
    SCREENER_SOURCE           = var.market_source
    SCREENER_SYMBOLS          = join(",", var.symbols)
    SCREENER_TOP_N            = tostring(var.top_n)
  }
  nats_monitoring_endpoint = module.nats.monitor_endpoint
  domain                   = module.knative.domain

  depends_on = [module.nats, module.keda, module.knative, module.redis, module.postgres, module.otel_collector]
}
