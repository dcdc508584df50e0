# Workflows on the default branch of the image repositories (JWT role gha-registry-push): read the
# registry push credentials. Reading only; rotating them is an operator's job.
path "ci/data/registry/push" {
  capabilities = ["read"]
}
