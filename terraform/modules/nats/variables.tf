variable "namespace" {
  description = "Namespace of the NATS release."
  type        = string
}

variable "chart_version" {
  description = "Version of the nats-io/nats Helm chart."
  type        = string
}

variable "storage_size" {
  description = "Size of the JetStream file store volume."
  type        = string
}
