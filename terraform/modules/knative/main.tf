# Knative through its operator: Serving (with the Kourier ingress) for the gateway and the
# HTTP-triggered functions, Eventing plus eventing-natss's JetStream channel for their events.
resource "helm_release" "operator" {
  name             = "knative-operator"
  namespace        = "knative-operator"
  create_namespace = true
  repository       = "https://knative.github.io/operator"
  chart            = "knative-operator"
  version          = var.operator_chart_version
  wait             = true
}

resource "kubernetes_namespace_v1" "serving" {
  metadata {
    name = "knative-serving"
  }
}

resource "kubernetes_namespace_v1" "eventing" {
  metadata {
    name = "knative-eventing"
  }
}

resource "kubernetes_manifest" "serving" {
  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeServing"
    metadata = {
      name      = "knative-serving"
      namespace = kubernetes_namespace_v1.serving.metadata[0].name
    }
    spec = {
      version = var.knative_version
      ingress = {
        kourier = {
          enabled = true
        }
      }
      config = {
        network = {
          "ingress-class" = "kourier.ingress.networking.knative.dev"
        }
        domain = {
          (var.domain) = ""
        }
        # WebSockets are long requests: allow the gateway's hour-long timeouts.
        defaults = {
          "max-revision-timeout-seconds" = tostring(var.max_revision_timeout_seconds)
        }
        # The containers run with a read-only root file system and an emptyDir /tmp.
        features = {
          "kubernetes.podspec-emptydir"        = "enabled"
          "kubernetes.podspec-securitycontext" = "enabled"
        }
        autoscaler = {
          "enable-scale-to-zero" = "true"
        }
      }
    }
  }

  depends_on = [helm_release.operator]
}

resource "kubernetes_manifest" "eventing" {
  manifest = {
    apiVersion = "operator.knative.dev/v1beta1"
    kind       = "KnativeEventing"
    metadata = {
      name      = "knative-eventing"
      namespace = kubernetes_namespace_v1.eventing.metadata[0].name
    }
    spec = {
      version = var.knative_version
      # eventing-natss connects to nats://nats.nats-io.svc.cluster.local:4222 by default: the NATS
      # module installs exactly there.
      additionalManifests = [
        {
          URL = var.eventing_natss_manifest_url
        },
      ]
      config = {
        "default-ch-webhook" = {
          "default-ch-config" = yamlencode({
            clusterDefault = {
              apiVersion = "messaging.knative.dev/v1alpha1"
              kind       = "NatsJetStreamChannel"
            }
          })
        }
      }
    }
  }

  depends_on = [helm_release.operator]
}
