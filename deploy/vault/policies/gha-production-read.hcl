# Jobs in the protected GitHub environment `production` on the default branch, from push or
# workflow_dispatch (JWT role gha-production): read the production secrets of their OWN repository
# only, ci/production/<repository_id>/*. The path is templated on the immutable repository_id claim
# (the role's user_claim and claim_mappings), so a renamed or re-created repository never inherits
# another's secrets. @JWT_ACCESSOR@ is replaced with the jwt/ mount's accessor by configure-vault.sh.
path "ci/data/production/{{identity.entity.aliases.@JWT_ACCESSOR@.metadata.repository_id}}/*" {
  capabilities = ["read"]
}
