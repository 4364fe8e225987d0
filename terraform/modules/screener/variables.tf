variable "manifests_dir" {
  description = "The repository root: the manifests are read from deploy/base, keda and knative under it."
  type        = string
}

variable "namespace" {
  description = "Namespace of the application; it must exist and hold the Secret."
  type        = string
}

variable "image" {
  description = "The screener container image."
  type        = string
}

variable "secret_name" {
  description = "Existing Secret the containers take redis-url, postgres-dsn, jwt-secret and the optional whop-api-key, whop-webhook-secret and smtp-url from."
  type        = string
}

variable "replica_bounds" {
  description = "KEDA minReplicaCount and maxReplicaCount per JetStream-driven function."
  type = map(object({
    min = number
    max = number
  }))
}

variable "gateway_scale" {
  description = "Knative min-scale and max-scale of the gateway."
  type = object({
    min = number
    max = number
  })
}

variable "http_functions" {
  description = "Functions deployed HTTP-triggered (knative/functions) instead of as KEDA workers (keda)."
  type        = list(string)
}

variable "config" {
  description = "SCREENER_* settings merged over the ConfigMap of deploy/base/config.yaml."
  type        = map(string)
}

variable "nats_monitoring_endpoint" {
  description = "host:port of NATS' monitoring port for the ScaledObjects' natsServerMonitoringEndpoint."
  type        = string
}

variable "domain" {
  description = "DNS suffix of the Knative routes."
  type        = string
}
