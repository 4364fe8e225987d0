variable "chart_version" {
  description = "Version of the kedacore/keda Helm chart."
  type        = string
}

variable "namespace" {
  description = "Namespace of KEDA's operator."
  type        = string
  default     = "keda"
}
