// Command conformance is one multi-call binary for arc-hook's conformance cluster: etcd, kube-apiserver,
// kube-scheduler and kube-controller-manager from their own Go modules, plus the kubelet-API front
// of the node agent (scripts/real-cluster.sh writes the PKI with openssl). One link instead of
// five, like the old hyperkube.
package main

import (
	"fmt"
	"os"

	_ "time/tzdata" // CronJob time zones, as kube-apiserver's and kube-controller-manager's mains do

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream's mains
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream's mains
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream's mains
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: conformance COMMAND [FLAGS]
commands: etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubelet-front`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	name, args := os.Args[1], os.Args[2:]
	switch name {
	case "etcd":
		// etcdmain reads os.Args itself and wants the program name first.
		etcdmain.Main(append([]string{"etcd"}, args...))
	case "kube-apiserver":
		run(apiserver.NewAPIServerCommand(), args)
	case "kube-scheduler":
		run(scheduler.NewSchedulerCommand(), args)
	case "kube-controller-manager":
		run(controllermanager.NewControllerManagerCommand(), args)
	case "kubelet-front":
		exitOn(runKubeletFront(args))
	default:
		fmt.Fprintf(os.Stderr, "conformance: unknown command %q\n%s\n", name, usage)
		os.Exit(2)
	}
}

// run executes one of upstream's cobra commands with the given arguments.
func run(c *cobra.Command, args []string) {
	c.SetArgs(args)
	os.Exit(cli.Run(c))
}

func exitOn(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "conformance: %v\n", err)
		os.Exit(1)
	}
}
