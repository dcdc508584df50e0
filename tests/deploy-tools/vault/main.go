// Command vault is HashiCorp Vault's CLI and server, built from its Go module
// (its own main package has replace directives, so it cannot be installed with
// go install; this main calls the same entry point).
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
