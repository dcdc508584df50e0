# docker-build-push (JWT role gha-image-tags-write, bound to this repository's id): record the tag it
# pushed, under this repository's path only. The path is literal: Vault refuses a templated policy
# whose substitution contains "/" ("template substitution contains forbidden value"), and GitHub's
# `repository` claim is owner/name, so {{...metadata.repository}} would deny every request of the token.
# A second writing repository gets its own role (bound to its repository_id) and policy.
path "ci/data/image-tags/example-org/arc-hook/*" {
  capabilities = ["create", "update", "patch", "read"]
}
