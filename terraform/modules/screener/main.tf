# The application, from the same manifests `kubectl apply -k` uses (deploy/base, keda, knative), so
# there is one definition of each object. Terraform substitutes the image, the namespace, the Secret's
# name, the settings and the replica bounds, and leaves out the Namespace (it must exist beforehand,
# with the Secret in it).

locals {
  # The image and Secret names the committed manifests use, replaced here.
  manifest_image  = "screener:0.1.0"
  manifest_secret = "screener-secrets"

  functions      = ["calculator", "rules", "recorder", "notifier"]
  keda_functions = [for f in local.functions : f if !contains(var.http_functions, f)]

  files = concat(
    [for f in ["serviceaccount", "networkpolicy", "config", "migrate", "collector"] : "${var.manifests_dir}/deploy/base/${f}.yaml"],
    [for f in local.keda_functions : "${var.manifests_dir}/keda/${f}.yaml"],
    ["${var.manifests_dir}/knative/gateway.yaml"],
    [for f in var.http_functions : "${var.manifests_dir}/knative/functions/${f}.yaml"],
  )

  texts = [
    for f in local.files : replace(
      replace(file(f), "image: ${local.manifest_image}", "image: ${var.image}"),
      "name: ${local.manifest_secret}", "name: ${var.secret_name}",
    )
  ]

  # Split multi-document files; a document of comments only decodes to null and is dropped.
  documents = [
    for doc in flatten([for t in local.texts : split("\n---\n", t)]) : yamldecode(doc)
    if yamldecode(doc) != null
  ]

  # Each object is the document merged with the overrides that apply to its kind (zero or one each).
  objects = [
    for d in local.documents : merge(concat(
      [d, { metadata = merge(d.metadata, { namespace = var.namespace }) }],
      [for _ in range(d.kind == "ConfigMap" ? 1 : 0) : { data = merge(d.data, var.config) }],
      [for _ in range(d.kind == "ScaledObject" ? 1 : 0) : {
        spec = merge(d.spec, {
          minReplicaCount = var.replica_bounds[d.metadata.name].min
          maxReplicaCount = var.replica_bounds[d.metadata.name].max
          triggers = [for t in d.spec.triggers : merge(t, {
            metadata = merge(t.metadata, { natsServerMonitoringEndpoint = var.nats_monitoring_endpoint })
          })]
        })
      }],
      [for _ in range(d.kind == "Service" && d.metadata.name == "gateway" ? 1 : 0) : {
        spec = merge(d.spec, {
          template = merge(d.spec.template, {
            metadata = merge(d.spec.template.metadata, {
              annotations = merge(d.spec.template.metadata.annotations, {
                "autoscaling.knative.dev/min-scale" = tostring(var.gateway_scale.min)
                "autoscaling.knative.dev/max-scale" = tostring(var.gateway_scale.max)
              })
            })
          })
        })
      }],
    )...)
  ]
}

resource "kubernetes_manifest" "object" {
  for_each = { for o in local.objects : "${o.kind}/${o.metadata.name}" => o }

  manifest = each.value

  field_manager {
    force_conflicts = true
  }
}
