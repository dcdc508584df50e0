# Any workflow of the organisation, through fetch-secrets (JWT role gha-image-tags-read): read the
# image tags CI recorded (ci/image-tags/<owner>/<repo>/<image>). Tags are not secrets; writing stays
# with gha-image-tags-write, limited to the building repository's own path.
path "ci/data/image-tags/*" {
  capabilities = ["read"]
}
