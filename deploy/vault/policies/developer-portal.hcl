# The developer portal (Kubernetes auth role developer-portal): show which image tag each
# repository last published. Read and list only.
path "ci/data/image-tags/*" {
  capabilities = ["read"]
}
path "ci/metadata/image-tags/*" {
  capabilities = ["read", "list"]
}
path "ci/metadata/image-tags" {
  capabilities = ["list"]
}
