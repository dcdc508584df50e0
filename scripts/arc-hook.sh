#!/bin/sh
# The runner-side wrapper: point ACTIONS_RUNNER_CONTAINER_HOOKS at this file.
# The runner accepts only .sh/.js/.ps1 hook paths; it runs this with bash and pipes the
# command's JSON on stdin, which passes straight through to the binary.
exec "${ARC_HOOK_BIN:-$(dirname "$0")/arc-hook}" "$@"
