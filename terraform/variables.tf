variable "kubeconfig_path" {
  description = "Path of the kubeconfig of the target cluster (k3s: /etc/rancher/k3s/k3s.yaml)."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "Context in the kubeconfig (kind: kind-<cluster name>); null for the current one."
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace of the application, Redis and PostgreSQL. It must exist and hold the Secret named by secret_name before apply (docs/deploy.md)."
  type        = string
  default     = "screener"
}

variable "secret_name" {
  description = "Name of an existing Secret in the namespace with keys redis-password, postgres-password, password, redis-url, postgres-dsn and jwt-secret (and optionally whop-api-key, whop-webhook-secret, smtp-url: docs/deploy.md). Terraform never reads or stores its values."
  type        = string
  default     = "screener-secrets"
}

variable "image" {
  description = "The screener container image (built from the Dockerfile), e.g. ghcr.io/acme/screener:0.1.0."
  type        = string
  default     = "screener:0.1.0"
}

variable "symbols" {
  description = "Symbols the collector follows (SCREENER_SYMBOLS); empty to follow the top_n by volume."
  type        = list(string)
  default     = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
}

variable "top_n" {
  description = "Follow the top N USDT perpetuals by 24 h quote volume when symbols is empty (SCREENER_TOP_N)."
  type        = number
  default     = 0
}

variable "market_source" {
  description = "Where candles come from: binance (live) or replay (the recorded klines shipped in the image)."
  type        = string
  default     = "binance"

  validation {
    condition     = contains(["binance", "replay"], var.market_source)
    error_message = "market_source must be binance or replay."
  }
}

variable "replica_bounds" {
  description = "KEDA minReplicaCount and maxReplicaCount per JetStream-driven function (defaults: screener/scale_advice.py SCALING)."
  type = map(object({
    min = number
    max = number
  }))
  default = {
    calculator = { min = 1, max = 8 }
    rules      = { min = 1, max = 6 }
    recorder   = { min = 0, max = 4 }
    notifier   = { min = 0, max = 5 }
  }
}

variable "gateway_scale" {
  description = "Knative min-scale and max-scale of the gateway."
  type = object({
    min = number
    max = number
  })
  default = {
    min = 1
    max = 10
  }
}

variable "http_functions" {
  description = "Functions run HTTP-triggered by Knative Eventing instead of as KEDA-scaled JetStream workers (only notifier is supported)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.http_functions : contains(["notifier"], f)])
    error_message = "Only the notifier has a Knative Eventing deployment (knative/functions/notifier.yaml)."
  }
}

variable "domain" {
  description = "DNS suffix of the Knative routes; the gateway is served at gateway.<namespace>.<domain>. sslip.io resolves to the IP in the name."
  type        = string
  default     = "127.0.0.1.sslip.io"
}

variable "nats_namespace" {
  description = "Namespace of NATS; nats-io is where eventing-natss looks by default."
  type        = string
  default     = "nats-io"
}

variable "jetstream_storage_size" {
  description = "Size of the JetStream file store volume."
  type        = string
  default     = "10Gi"
}

variable "postgres_storage_size" {
  description = "Size of the PostgreSQL data volume."
  type        = string
  default     = "10Gi"
}

variable "chart_versions" {
  description = "Helm chart versions, pinned so an apply is repeatable."
  type = object({
    nats             = string
    keda             = string
    knative_operator = string
    redis            = string
    postgresql       = string
    otel_collector   = string
  })
  default = {
    nats             = "1.3.3"
    keda             = "2.17.2"
    knative_operator = "v1.19.0"
    redis            = "21.2.5"
    postgresql       = "16.7.13"
    otel_collector   = "0.127.2"
  }
}

variable "knative_version" {
  description = "Knative Serving and Eventing version the operator installs."
  type        = string
  default     = "1.19"
}

variable "eventing_natss_manifest_url" {
  description = "Release manifest of eventing-natss (the JetStream channel), applied by the Knative operator."
  type        = string
  default     = "https://github.com/knative-extensions/eventing-natss/releases/download/knative-v1.19.6/eventing-jsm.yaml"
}
