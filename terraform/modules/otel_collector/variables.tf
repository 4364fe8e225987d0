variable "chart_version" {
  description = "Version of the open-telemetry/opentelemetry-collector Helm chart."
  type        = string
}

variable "namespace" {
  description = "Namespace of the collector."
  type        = string
  default     = "observability"
}
