variable "operator_chart_version" {
  description = "Version of the knative-operator Helm chart."
  type        = string
}

variable "knative_version" {
  description = "Knative Serving and Eventing version (major.minor) the operator installs."
  type        = string
}

variable "domain" {
  description = "DNS suffix of the Knative routes."
  type        = string
}

variable "eventing_natss_manifest_url" {
  description = "Release manifest of eventing-natss's JetStream channel (eventing-jsm.yaml)."
  type        = string
}

variable "max_revision_timeout_seconds" {
  description = "Longest request a revision may serve: the gateway's WebSockets live up to this long."
  type        = number
  default     = 3600
}
