# Jobs in the GitHub environment `production` on the default branch (JWT role gha-production):
# read the production deployment secrets.
path "ci/data/production/*" {
  capabilities = ["read"]
}
