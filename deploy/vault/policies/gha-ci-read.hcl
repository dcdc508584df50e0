# Any workflow of the organisation, through fetch-secrets (JWT role gha-ci): read the org-wide CI
# secrets under ci/shared/ (package-mirror tokens, read-only API keys). Nothing else.
path "ci/data/shared/*" {
  capabilities = ["read"]
}
