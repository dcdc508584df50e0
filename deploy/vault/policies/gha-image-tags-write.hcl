# docker-build-push (JWT role gha-image-tags-write): record the tag it pushed, under its own
# repository's path only. @JWT_ACCESSOR@ is replaced with the jwt/ auth mount's accessor by
# configure-vault.sh; the `repository` alias metadata comes from the role's claim_mappings.
path "ci/data/image-tags/{{identity.entity.aliases.@JWT_ACCESSOR@.metadata.repository}}/*" {
  capabilities = ["create", "update", "patch", "read"]
}
