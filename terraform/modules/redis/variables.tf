variable "namespace" {
  description = "Namespace of Redis (the application's, where the Secret is)."
  type        = string
}

variable "chart_version" {
  description = "Version of the bitnami/redis Helm chart."
  type        = string
}

variable "secret_name" {
  description = "Existing Secret holding the Redis password under the key redis-password."
  type        = string
}
