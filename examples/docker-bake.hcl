// Builds the CPU and GPU variants of one recipe in parallel:
//   docker buildx bake -f examples/docker-bake.hcl
// Both targets share the kiln frontend, the base image and the pip cache
// mount; each gets its own image tag.

variable "CA_BUNDLE" {
  default = "/etc/ssl/certs/ca-certificates.crt"
}

group "default" {
  targets = ["cpu", "gpu"]
}

target "_recipe" {
  context    = "examples/sklearn-service"
  dockerfile = "kiln.kdl"
  secret     = ["id=ca-bundle,src=${CA_BUNDLE}"]
}

target "cpu" {
  inherits = ["_recipe"]
  target   = "cpu"
  tags     = ["kiln-examples/sklearn-service:cpu"]
}

target "gpu" {
  inherits = ["_recipe"]
  target   = "gpu"
  tags     = ["kiln-examples/sklearn-service:gpu"]
}
