package main

// The kubelet-API front of arc-hook's node agent: kube-apiserver proxies a pod's exec (SPDY or
// WebSocket, the kubelet's own streaming server from k8s.io/kubelet) and logs to the Node's
// kubelet port; this front serves those paths and forwards each to the node agent's local
// simulator, whose kubelet runs the pod's containers (exec over WebSocket v5, logs over HTTP).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	// The SPDY protocols the kubelet negotiates (v4 down to v1); a client's WebSocket v5 ends at
	// the apiserver, which translates it to SPDY v4 in 1.35.
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	streaming "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
)

// Bounds of the streaming server: an idle exec is closed after streamIdle, and the apiserver has
// streamCreation to open its streams (the kubelet's defaults are 4 h and 30 s).
const (
	streamIdle     = 4 * time.Hour
	streamCreation = 30 * time.Second
)

func runKubeletFront(args []string) error {
	fs := flag.NewFlagSet("kubelet-front", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:10250", "address the apiserver connects to (the Node's kubelet port)")
	backend := fs.String("backend", "", "URL of the node agent's local simulator (http://127.0.0.1:PORT)")
	certFile := fs.String("tls-cert-file", "", "serving certificate")
	keyFile := fs.String("tls-private-key-file", "", "serving key")
	clientCA := fs.String("client-ca-file", "", "CA whose client certificates (the apiserver's) are accepted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *backend == "" || *certFile == "" || *keyFile == "" || *clientCA == "" {
		return errors.New("kubelet-front needs --backend, --tls-cert-file, --tls-private-key-file and --client-ca-file")
	}
	target, err := url.Parse(*backend)
	if err != nil {
		return fmt.Errorf("--backend: %w", err)
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		return fmt.Errorf("--client-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("--client-ca-file %s holds no certificate", *clientCA)
	}
	front := &front{backend: target, exec: &simExecutor{backend: target}}
	server := &http.Server{
		Addr:              *listen,
		Handler:           front.routes(),
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig: &tls.Config{
			ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs:  pool,
			MinVersion: tls.VersionTLS12,
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "kubelet-front: serving %s, backend %s\n", *listen, target)
	if err := server.ListenAndServeTLS(*certFile, *keyFile); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type front struct {
	backend *url.URL
	exec    *simExecutor
}

func (f *front) routes() http.Handler {
	mux := http.NewServeMux()
	// The kubelet's paths, with and without the pod UID (the apiserver sends neither form's UID today).
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", f.serveExec)
	mux.HandleFunc("/exec/{ns}/{pod}/{uid}/{container}", f.serveExec)
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", f.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	return mux
}

func (f *front) serveExec(w http.ResponseWriter, req *http.Request) {
	opts, err := streaming.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := req.URL.Query()["command"]
	// The pod name is passed through as "ns/pod": the executor needs both.
	name := req.PathValue("ns") + "/" + req.PathValue("pod")
	streaming.ServeExec(w, req, f.exec, name, types.UID(req.PathValue("uid")), req.PathValue("container"),
		cmd, opts, streamIdle, streamCreation, remotecommandconsts.SupportedStreamingProtocols)
}

// serveLogs forwards to the simulator's pod log endpoint, whose query parameters (follow,
// sinceTime, sinceSeconds, timestamps, tailLines, limitBytes, previous) are the kubelet's.
func (f *front) serveLogs(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	q.Set("container", req.PathValue("container"))
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/log", url.PathEscape(req.PathValue("ns")), url.PathEscape(req.PathValue("pod")))
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = f.backend.Scheme
			r.Out.URL.Host = f.backend.Host
			r.Out.URL.Path = path
			r.Out.URL.RawQuery = q.Encode()
			r.Out.Host = f.backend.Host
		},
		FlushInterval: -1, // follow streams line by line
	}
	proxy.ServeHTTP(w, req)
}

// simExecutor runs an exec in the simulator's pod of the same namespace and name over WebSocket
// v5. client-go reports a non-zero exit as k8s.io/utils/exec.CodeExitError, which ServeExec turns
// into the NonZeroExitCode status with the exact code.
type simExecutor struct{ backend *url.URL }

func (s *simExecutor) ExecInContainer(ctx context.Context, name string, _ types.UID, container string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration) error {
	ns, pod, ok := strings.Cut(name, "/")
	if !ok {
		return fmt.Errorf("pod %q is not namespace/name", name)
	}
	q := url.Values{"container": {container}, "command": cmd}
	if in != nil {
		q.Set("stdin", "true")
	}
	if out != nil {
		q.Set("stdout", "true")
	}
	if errOut != nil && !tty {
		q.Set("stderr", "true")
	}
	if tty {
		q.Set("tty", "true")
	}
	u := *s.backend
	u.Path = fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/exec", url.PathEscape(ns), url.PathEscape(pod))
	u.RawQuery = q.Encode()
	exec, err := remotecommand.NewWebSocketExecutor(&rest.Config{Host: s.backend.String()}, "GET", u.String())
	if err != nil {
		return fmt.Errorf("exec backend: %w", err)
	}
	opts := remotecommand.StreamOptions{Stdin: in, Tty: tty}
	if out != nil {
		opts.Stdout = out
	}
	if errOut != nil && !tty {
		opts.Stderr = errOut
	}
	if resize != nil {
		opts.TerminalSizeQueue = sizeQueue(resize)
	}
	return exec.StreamWithContext(ctx, opts)
}

type sizeQueue <-chan remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize {
	size, ok := <-q
	if !ok {
		return nil
	}
	return &size
}
