package main

import "errors"

// errNotBuilt marks the subcommands of issue 24 that are not written yet (PKI writer, kubelet-API front).
var errNotBuilt = errors.New("not implemented yet (issue 24)")

func runPKI(_ []string) error          { return errNotBuilt }
func runKubeletFront(_ []string) error { return errNotBuilt }
