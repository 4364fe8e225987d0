variable "namespace" {
  description = "Namespace of PostgreSQL (the application's, where the Secret is)."
  type        = string
}

variable "chart_version" {
  description = "Version of the bitnami/postgresql Helm chart."
  type        = string
}

variable "secret_name" {
  description = "Existing Secret holding the passwords under the keys postgres-password (admin) and password (user screener)."
  type        = string
}

variable "storage_size" {
  description = "Size of the data volume."
  type        = string
}
